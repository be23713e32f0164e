//! The members of enabled meshes, served. Each member cluster (registered with a
//! credential, its project's mesh enabled) gets what a `--kubeconfig` cluster gets: its
//! config, services and remote secrets watched, its own snapshot pipeline and xDS
//! context (its proxies, routed by the cluster they name, see [`MeshdRouter`]), its
//! proxies' tokens reviewed by its own API server (so a token of one cluster proves
//! nothing in another), certificates from its project's CA in its project's trust
//! domain, the roots in every namespace, its managed data plane (its DataPlaneControls'
//! versions injected, its rollouts driven by whichever meshd holds its Lease), and its
//! credential renewed.
//! A membership removed, or a mesh not enabled, stops all of it and ends its streams.
//!
//! A member nobody uses costs nothing: with no connected proxy and no webhook call for
//! `--idle-after`, it is scaled to zero (its watches, snapshot and tasks dropped; only
//! its name, project and credential path kept). The first proxy stream, CSR or webhook
//! call for it wakes it: that call waits for the member's first full list and snapshot.
//! A member registered (or its mesh enabled) while meshd runs starts awake; the members
//! meshd finds when it starts start asleep.

use super::credential;
use super::{Fleet, Project};
use crate::authorities::Authorities;
use crate::{DATA_PLANE_INTERVAL, MeshdConfig, ingest};
use fleetmesh_ca::{Authenticator, CaRoute, CaRouter, CertificateAuthority};
use fleetmesh_dataplane::controller::{ProxyVersionsWatch, Rollouts};
use fleetmesh_kube::egress::EgressPolicy;
use fleetmesh_kube::token_review::TokenReviewer;
use fleetmesh_server::{Metrics, Registry, RouteDelivery, Router, ServerContext};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How often members' credentials are looked at for renewal (they live a day, renewed
/// at half of it).
const CREDENTIAL_LOOK: Duration = Duration::from_secs(10 * 60);

/// What every member is served with.
pub struct MemberSettings {
    /// meshd's settings (domain, root namespace, debounce; the cluster id is the member's).
    pub config: MeshdConfig,
    /// Where member API servers may be.
    pub egress: EgressPolicy,
    /// Every stream is listed here (debug endpoints).
    pub registry: Arc<Registry>,
    /// Every stream is counted here.
    pub metrics: Arc<Metrics>,
    /// meshd's CA (whose roots verify meshd) and its projects' CAs.
    pub authorities: Arc<Authorities>,
    /// The proxy version of each revision this meshd knows.
    pub channels: fleetmesh_inject::versions::ChannelTable,
    /// meshd's shutdown: every member stops with it.
    pub shutdown: CancellationToken,
}

/// What a member is served as: its project, trust domain, routes and credential (a change of
/// any restarts it: a re-run of install with another API server address or CA is
/// picked up at once).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Serving {
    project: String,
    trust_domain: String,
    /// Whether its sidecars fetch their outbound routes on demand.
    on_demand_routes: bool,
    /// Its credential's directory.
    credential: PathBuf,
    /// When its kubeconfig was written ([`credential::written_at`]).
    kubeconfig: std::time::SystemTime,
}

/// One member being served.
struct Member {
    serving: Serving,
    context: Arc<ServerContext>,
    reviewer: Arc<TokenReviewer>,
    /// Its project's CA.
    authority: watch::Receiver<Arc<CertificateAuthority>>,
    /// Its DataPlaneControls' proxy versions.
    proxy_versions: ProxyVersionsWatch,
    /// Its DataPlaneControls' status, by revision.
    rollouts: watch::Receiver<Rollouts>,
    stop: CancellationToken,
    /// The last stream, CSR or webhook call for it.
    last_used: Instant,
}

impl Drop for Member {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// What a member's injected pods are told.
pub struct Injection {
    /// Its project's trust domain.
    pub trust_domain: String,
    /// Its DataPlaneControls' proxy versions.
    pub proxy_versions: ProxyVersionsWatch,
    /// Its sidecars fetch their routes on demand: they need delta xDS.
    pub delta_xds: bool,
}

/// The members served now, by cluster name.
pub struct Members {
    settings: MemberSettings,
    serving: Mutex<BTreeMap<String, Member>>,
    /// Members scaled to zero: what it takes to wake them.
    asleep: Mutex<BTreeMap<String, Serving>>,
    /// One wake at a time (a wake takes a member's first full list).
    waking: tokio::sync::Mutex<()>,
}

/// Whether a served member is awake now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    /// Its watches run and its proxies are served.
    Awake,
    /// Scaled to zero; the next call for it wakes it.
    Asleep,
}

impl Members {
    /// Serves the members of `fleet`'s enabled meshes from now on, following its changes
    /// (made here or by another replica), and keeps their credentials renewed.
    pub fn start(settings: MemberSettings, fleet: Arc<Fleet>) -> Arc<Members> {
        let members = Arc::new(Members {
            settings,
            serving: Mutex::default(),
            asleep: Mutex::default(),
            waking: tokio::sync::Mutex::new(()),
        });
        let keeper = members.clone();
        let stop = members.settings.shutdown.clone();
        // Idleness is looked at a few times per --idle-after.
        let sweep = (members.settings.config.idle_after / 4)
            .clamp(Duration::from_millis(200), Duration::from_secs(30));
        let renewing = credential::keep_renewed(
            fleet.clone(),
            members.settings.egress.clone(),
            CREDENTIAL_LOOK,
        );
        spawn_until(&members.settings.shutdown, renewing);
        let mut changes = fleet.subscribe();
        tokio::spawn(async move {
            let mut starting = true;
            loop {
                keeper.reconcile(&fleet, starting).await;
                starting = false;
                tokio::select! {
                    changed = changes.changed() => if changed.is_err() { break },
                    () = tokio::time::sleep(sweep) => keeper.put_idle_to_sleep(),
                    () = stop.cancelled() => break,
                }
            }
            keeper.serving.lock().clear();
        });
        members
    }

    /// The context serving `cluster`, if it is a served member (woken if asleep).
    pub async fn context(&self, cluster: &str) -> Option<Arc<ServerContext>> {
        self.use_member(cluster, |m| m.context.clone()).await
    }

    /// Who reviews the tokens of `cluster`'s workloads and signs their certificates, if
    /// it is a served member (woken if asleep).
    pub async fn ca_route(&self, cluster: &str) -> Option<CaRoute> {
        self.use_member(cluster, |m| CaRoute {
            authenticator: m.reviewer.clone(),
            authority: m.authority.borrow().clone(),
        })
        .await
    }

    /// Marks `cluster` used now (a webhook call for it), waking it if asleep; what its
    /// pods are injected with, if it is a served member.
    pub async fn webhook_call(&self, cluster: &str) -> Option<Injection> {
        self.use_member(cluster, |m| Injection {
            trust_domain: m.serving.trust_domain.clone(),
            proxy_versions: m.proxy_versions.clone(),
            delta_xds: m.serving.on_demand_routes,
        })
        .await
    }

    /// The rollouts of the members awake now (an idle member's controller is stopped), by
    /// cluster.
    pub fn rollouts(&self) -> BTreeMap<String, Rollouts> {
        self.serving
            .lock()
            .iter()
            .map(|(cluster, m)| (cluster.clone(), m.rollouts.borrow().clone()))
            .collect()
    }

    /// The served members, with their projects and whether they are awake.
    pub fn served(&self) -> BTreeMap<String, (String, MemberState)> {
        let mut served: BTreeMap<String, (String, MemberState)> = self
            .serving
            .lock()
            .iter()
            .map(|(cluster, m)| {
                let state = (m.serving.project.clone(), MemberState::Awake);
                (cluster.clone(), state)
            })
            .collect();
        for (cluster, asleep) in self.asleep.lock().iter() {
            let state = (asleep.project.clone(), MemberState::Asleep);
            served.insert(cluster.clone(), state);
        }
        served
    }

    /// `read` of the member serving `cluster`, marked used now; a member asleep is woken
    /// first. `None` if `cluster` is no served member (or cannot be woken).
    async fn use_member<T>(&self, cluster: &str, read: impl Fn(&Member) -> T) -> Option<T> {
        let used = |serving: &mut BTreeMap<String, Member>| {
            serving.get_mut(cluster).map(|member| {
                member.last_used = Instant::now();
                read(member)
            })
        };
        if let Some(value) = used(&mut self.serving.lock()) {
            return Some(value);
        }
        if !self.asleep.lock().contains_key(cluster) {
            return None;
        }
        let _one_wake = self.waking.lock().await;
        // Another call may have woken it meanwhile.
        if let Some(value) = used(&mut self.serving.lock()) {
            return Some(value);
        }
        let asleep = self.asleep.lock().get(cluster).cloned()?;
        let started = Instant::now();
        match self.serve(cluster, asleep).await {
            Ok(member) => {
                tracing::info!(%cluster, took = ?started.elapsed(), "member woken");
                let value = read(&member);
                self.asleep.lock().remove(cluster);
                self.serving.lock().insert(cluster.to_string(), member);
                Some(value)
            }
            Err(error) => {
                let error = format!("{error:#}");
                tracing::warn!(%cluster, %error, "cannot wake member cluster");
                None
            }
        }
    }

    /// Scales to zero the members with no stream and no use for `--idle-after`.
    fn put_idle_to_sleep(&self) {
        let idle_after = self.settings.config.idle_after;
        let mut serving = self.serving.lock();
        let idle: Vec<String> = serving
            .iter()
            // Streams hold the context: only the member's own reference means none.
            .filter(|(_, m)| Arc::strong_count(&m.context) == 1)
            .filter(|(_, m)| m.last_used.elapsed() >= idle_after)
            .map(|(cluster, _)| cluster.clone())
            .collect();
        for cluster in idle {
            if let Some(member) = serving.remove(&cluster) {
                let project = &member.serving.project;
                tracing::info!(%cluster, %project, "member idle: scaled to zero");
                self.asleep.lock().insert(cluster, member.serving.clone());
            }
        }
    }

    /// Whether the sidecars of `project` fetch their outbound routes on demand: as the
    /// project says, else as meshd's `--on-demand-routes` does.
    pub fn on_demand_routes(&self, project: &Project) -> bool {
        project
            .on_demand_routes
            .unwrap_or(self.settings.config.on_demand_routes)
    }

    /// Starts the members the fleet wants and stops the others; `starting` (meshd's
    /// first look at the fleet): members found are put to sleep instead.
    async fn reconcile(&self, fleet: &Fleet, starting: bool) {
        let metrics = &self.settings.metrics;
        metrics.set_cluster_projects(fleet.cluster_projects());
        let mut wanted: BTreeMap<String, Serving> = BTreeMap::new();
        for (project, state) in fleet.projects() {
            if !state.mesh_enabled {
                continue;
            }
            for cluster in state.memberships.keys() {
                let dir = fleet.credential_dir(&project, cluster);
                if cluster == &self.settings.config.cluster_id {
                    tracing::warn!(%cluster, %project, "a member named as meshd's own cluster is not served");
                } else if let Some(kubeconfig) = credential::written_at(&dir) {
                    let serving = Serving {
                        project: project.clone(),
                        trust_domain: state.trust_domain_of(&project),
                        on_demand_routes: self.on_demand_routes(&state),
                        credential: dir,
                        kubeconfig,
                    };
                    wanted.insert(cluster.clone(), serving);
                }
            }
        }
        let still_wanted = |cluster: &String, serving: &Serving| {
            let keep = wanted.get(cluster) == Some(serving);
            if !keep {
                tracing::info!(%cluster, project = %serving.project, "member no longer served as it was");
            }
            keep
        };
        self.serving
            .lock()
            .retain(|cluster, m| still_wanted(cluster, &m.serving));
        self.asleep
            .lock()
            .retain(|cluster, serving| still_wanted(cluster, serving));
        for (cluster, serving) in wanted {
            let known = self.serving.lock().contains_key(&cluster)
                || self.asleep.lock().contains_key(&cluster);
            if known {
                continue;
            }
            if starting {
                // After a restart no member costs anything until it is used again (its
                // proxies reconnecting wake it at once).
                self.asleep.lock().insert(cluster, serving);
                continue;
            }
            let project = serving.project.clone();
            match self.serve(&cluster, serving).await {
                Ok(member) => {
                    tracing::info!(%cluster, %project, "serving member cluster");
                    self.serving.lock().insert(cluster, member);
                }
                Err(error) => {
                    tracing::warn!(%cluster, %project, error = %format!("{error:#}"), "cannot serve member cluster; retried on the next fleet change");
                }
            }
        }
    }

    /// Connects to the member and starts everything it is served with.
    async fn serve(&self, cluster: &str, serving: Serving) -> anyhow::Result<Member> {
        let settings = &self.settings;
        let dir = &serving.credential;
        let kube_config = credential::load(dir, &settings.egress).await?;
        let client = kube::Client::try_from(kube_config.clone())?;
        // The managed data plane retries nothing inside the client: a PDB's 429 is an
        // answer to act on.
        let mut data_plane_config = kube_config;
        data_plane_config.default_retry = false;
        let data_plane_client = kube::Client::try_from(data_plane_config)?;
        let authority = settings
            .authorities
            .project(&serving.project, &serving.trust_domain)?;
        let mut config = settings.config.clone();
        config.cluster_id = cluster.to_string();
        config.trust_domain = serving.trust_domain.clone();
        let (changes_tx, changes) = tokio::sync::mpsc::unbounded_channel();
        let watches =
            ingest::watch_cluster(&client, &config, &settings.egress, &changes_tx).await?;
        let sources =
            ingest::Sources::new(&config, &settings.egress, None, Some(watches), changes_tx);
        let stop = settings.shutdown.child_token();
        let (states, publishing) =
            ingest::publish_changes(sources, changes, settings.metrics.clone());
        spawn_until(&stop, publishing);
        // Its pods verify meshd with meshd's own roots; the project's are its mesh's.
        let roots = vec![authority.clone(), settings.authorities.own()];
        spawn_until(
            &stop,
            fleetmesh_kube::root_cert::publish(client.clone(), roots),
        );
        let (versions, proxy_versions) = watch::channel(None);
        let (rollouts_tx, rollouts) = watch::channel(Rollouts::new());
        let published = fleetmesh_dataplane::controller::Published {
            proxy_versions: versions,
            rollouts: rollouts_tx,
        };
        // It stops with the member, after releasing its Lease.
        tokio::spawn(fleetmesh_dataplane::controller::run(
            data_plane_client,
            DATA_PLANE_INTERVAL,
            config.data_plane_eviction_pace,
            settings.channels.clone(),
            published,
            stop.clone(),
        ));
        let reviewer = Arc::new(TokenReviewer::new(client));
        let context = ServerContext::new(
            states,
            settings.registry.clone(),
            settings.metrics.clone(),
            stop.clone(),
            reviewer.clone(),
            Some(cluster.to_string()),
            RouteDelivery::on_demand_if(serving.on_demand_routes),
        );
        Ok(Member {
            serving,
            context,
            reviewer,
            authority,
            proxy_versions,
            rollouts,
            stop,
            last_used: Instant::now(),
        })
    }
}

fn spawn_until(
    stop: &CancellationToken,
    work: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let stop = stop.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = work => {}
            () = stop.cancelled() => {}
        }
    });
}

/// meshd's streams and CSRs: a member cluster's to that member (its context, its
/// project's CA), every other to the mesh of meshd's own config (its directory and
/// `--kubeconfig` cluster), whose authenticator admits only what that mesh knows.
pub struct MeshdRouter {
    /// The mesh of meshd's own config.
    pub own: Arc<ServerContext>,
    /// Who that mesh's workloads are.
    pub own_authenticator: Arc<dyn Authenticator>,
    /// That mesh's CA.
    pub own_authority: watch::Receiver<Arc<CertificateAuthority>>,
    /// The fleet's members.
    pub members: Arc<Members>,
}

impl CaRouter for MeshdRouter {
    fn route<'a>(&'a self, cluster: Option<&'a str>) -> futures::future::BoxFuture<'a, CaRoute> {
        Box::pin(async move {
            let member = match cluster {
                Some(cluster) => self.members.ca_route(cluster).await,
                None => None,
            };
            member.unwrap_or_else(|| CaRoute {
                authenticator: self.own_authenticator.clone(),
                authority: self.own_authority.borrow().clone(),
            })
        })
    }
}

impl Router for MeshdRouter {
    fn route<'a>(
        &'a self,
        cluster: Option<&'a str>,
    ) -> futures::future::BoxFuture<'a, Result<Arc<ServerContext>, tonic::Status>> {
        Box::pin(async move {
            let member = match cluster {
                Some(cluster) => self.members.context(cluster).await,
                None => None,
            };
            Ok(member.unwrap_or_else(|| self.own.clone()))
        })
    }
}
