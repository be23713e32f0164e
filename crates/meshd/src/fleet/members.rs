//! The members of enabled meshes, served. Each member cluster (registered with a
//! credential, its project's mesh enabled) gets what a `--kubeconfig` cluster gets: its
//! config, services and remote secrets watched, its own snapshot pipeline and xDS
//! context (its proxies, routed by the cluster they name, see [`MeshdRouter`]), its
//! proxies' tokens reviewed by its own API server (so a token of one cluster proves
//! nothing in another), the mesh roots in every namespace, and its credential renewed.
//! A membership removed, or a mesh not enabled, stops all of it and ends its streams.
//!
//! A member nobody uses costs nothing: with no connected proxy and no webhook call for
//! `--idle-after`, it is scaled to zero (its watches, snapshot and tasks dropped; only
//! its name, project and credential path kept). The first proxy stream, CSR or webhook
//! call for it wakes it: that call waits for the member's first full list and snapshot.
//! A member registered (or its mesh enabled) while meshd runs starts awake; the members
//! meshd finds when it starts start asleep.

use super::Fleet;
use super::credential;
use crate::MeshdConfig;
use crate::ingest;
use fleetmesh_ca::CertificateAuthority;
use fleetmesh_kube::egress::EgressPolicy;
use fleetmesh_kube::token_review::TokenReviewer;
use fleetmesh_server::{Metrics, Registry, Router, ServerContext};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

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
    /// The mesh CA, whose roots go to every namespace.
    pub authority: watch::Receiver<Arc<CertificateAuthority>>,
    /// meshd's shutdown: every member stops with it.
    pub shutdown: CancellationToken,
}

/// One member being served.
struct Member {
    project: String,
    /// Its credential's directory (a new credential restarts the member).
    credential: PathBuf,
    context: Arc<ServerContext>,
    reviewer: Arc<TokenReviewer>,
    stop: CancellationToken,
    /// The last stream, CSR or webhook call for it.
    last_used: Instant,
}

/// A member scaled to zero: what it takes to wake it.
#[derive(Clone)]
struct Asleep {
    project: String,
    credential: PathBuf,
}

impl Drop for Member {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The members served now, by cluster name.
pub struct Members {
    settings: MemberSettings,
    serving: Mutex<BTreeMap<String, Member>>,
    /// Members scaled to zero.
    asleep: Mutex<BTreeMap<String, Asleep>>,
    /// One wake at a time (a wake takes a member's first full list).
    waking: tokio::sync::Mutex<()>,
    /// Signalled when the fleet changed.
    changed: Notify,
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
    /// (see [`Members::fleet_changed`]).
    pub fn start(settings: MemberSettings, fleet: Arc<Fleet>) -> Arc<Members> {
        let members = Arc::new(Members {
            settings,
            serving: Mutex::default(),
            asleep: Mutex::default(),
            waking: tokio::sync::Mutex::new(()),
            changed: Notify::new(),
        });
        let keeper = members.clone();
        let stop = members.settings.shutdown.clone();
        // Idleness is looked at a few times per --idle-after.
        let sweep = (members.settings.config.idle_after / 4)
            .clamp(Duration::from_millis(200), Duration::from_secs(30));
        tokio::spawn(async move {
            let mut starting = true;
            loop {
                keeper.reconcile(&fleet, starting).await;
                starting = false;
                tokio::select! {
                    () = keeper.changed.notified() => {}
                    () = tokio::time::sleep(sweep) => keeper.put_idle_to_sleep(),
                    () = stop.cancelled() => break,
                }
            }
            keeper.serving.lock().clear();
        });
        members
    }

    /// Tells the members that the fleet changed (a registration, a mesh enabled).
    pub fn fleet_changed(&self) {
        self.changed.notify_one();
    }

    /// The context serving `cluster`, if it is a served member (woken if asleep).
    pub async fn context(&self, cluster: &str) -> Option<Arc<ServerContext>> {
        self.use_member(cluster, |m| m.context.clone()).await
    }

    /// Who reviews the tokens of `cluster`'s workloads, if it is a served member (woken
    /// if asleep).
    pub async fn reviewer(&self, cluster: &str) -> Option<Arc<TokenReviewer>> {
        self.use_member(cluster, |m| m.reviewer.clone()).await
    }

    /// Marks `cluster` used now (a webhook call for it), waking it if asleep.
    pub async fn touch(&self, cluster: &str) {
        self.use_member(cluster, |_| ()).await;
    }

    /// The served members, with their projects and whether they are awake.
    pub fn served(&self) -> BTreeMap<String, (String, MemberState)> {
        let mut served: BTreeMap<String, (String, MemberState)> = self
            .serving
            .lock()
            .iter()
            .map(|(cluster, m)| (cluster.clone(), (m.project.clone(), MemberState::Awake)))
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
        match self
            .serve(cluster, &asleep.project, asleep.credential)
            .await
        {
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
                tracing::info!(%cluster, project = %member.project, "member idle: scaled to zero");
                let asleep = Asleep {
                    project: member.project.clone(),
                    credential: member.credential.clone(),
                };
                self.asleep.lock().insert(cluster, asleep);
            }
        }
    }

    /// Starts the members the fleet wants and stops the others; `starting` (meshd's
    /// first look at the fleet): members found are put to sleep instead.
    async fn reconcile(&self, fleet: &Fleet, starting: bool) {
        let mut wanted: BTreeMap<String, (String, PathBuf)> = BTreeMap::new();
        for (project, state) in fleet.projects() {
            if !state.mesh_enabled {
                continue;
            }
            for cluster in state.memberships.keys() {
                let dir = fleet.credential_dir(&project, cluster);
                if cluster == &self.settings.config.cluster_id {
                    tracing::warn!(%cluster, %project, "a member named as meshd's own cluster is not served");
                } else if dir.is_dir() {
                    wanted.insert(cluster.clone(), (project.clone(), dir));
                }
            }
        }
        let still_wanted = |cluster: &String, project: &String, credential: &PathBuf| {
            let keep = wanted
                .get(cluster)
                .is_some_and(|(p, dir)| p == project && dir == credential);
            if !keep {
                tracing::info!(%cluster, %project, "member no longer served");
            }
            keep
        };
        self.serving
            .lock()
            .retain(|cluster, m| still_wanted(cluster, &m.project, &m.credential));
        self.asleep
            .lock()
            .retain(|cluster, a| still_wanted(cluster, &a.project, &a.credential));
        for (cluster, (project, dir)) in wanted {
            let known = self.serving.lock().contains_key(&cluster)
                || self.asleep.lock().contains_key(&cluster);
            if known {
                continue;
            }
            if starting {
                // After a restart no member costs anything until it is used again (its
                // proxies reconnecting wake it at once).
                let asleep = Asleep {
                    project,
                    credential: dir,
                };
                self.asleep.lock().insert(cluster, asleep);
                continue;
            }
            match self.serve(&cluster, &project, dir).await {
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
    async fn serve(&self, cluster: &str, project: &str, dir: PathBuf) -> anyhow::Result<Member> {
        let settings = &self.settings;
        let client = kube::Client::try_from(credential::load(&dir, &settings.egress).await?)?;
        let mut config = settings.config.clone();
        config.cluster_id = cluster.to_string();
        let (changes_tx, changes) = tokio::sync::mpsc::unbounded_channel();
        let watches =
            ingest::watch_cluster(&client, &config, &settings.egress, &changes_tx).await?;
        let sources =
            ingest::Sources::new(&config, &settings.egress, None, Some(watches), changes_tx);
        let stop = settings.shutdown.child_token();
        let (states, publishing) = ingest::publish_changes(sources, changes);
        spawn_until(&stop, publishing);
        spawn_until(
            &stop,
            fleetmesh_kube::root_cert::publish(client.clone(), settings.authority.clone()),
        );
        spawn_until(
            &stop,
            credential::keep_renewed(client.clone(), dir.clone(), cluster.to_string()),
        );
        let reviewer = Arc::new(TokenReviewer::new(client));
        let context = ServerContext::new(
            states,
            settings.registry.clone(),
            settings.metrics.clone(),
            stop.clone(),
            reviewer.clone(),
            Some(cluster.to_string()),
        );
        Ok(Member {
            project: project.to_string(),
            credential: dir,
            context,
            reviewer,
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

/// meshd's streams: a member cluster's to that member's context, every other to the
/// mesh of meshd's own config (its directory and `--kubeconfig` cluster), whose
/// authenticator admits only what that mesh knows.
pub struct MeshdRouter {
    /// The mesh of meshd's own config.
    pub own: Arc<ServerContext>,
    /// The fleet's members.
    pub members: Arc<Members>,
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
