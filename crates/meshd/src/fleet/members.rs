//! The members of enabled meshes, served. Each member cluster (registered with a
//! credential, its project's mesh enabled) gets what a `--kubeconfig` cluster gets: its
//! config, services and remote secrets watched, its own snapshot pipeline and xDS
//! context (its proxies, routed by the cluster they name, see [`MeshdRouter`]), its
//! proxies' tokens reviewed by its own API server (so a token of one cluster proves
//! nothing in another), the mesh roots in every namespace, and its credential renewed.
//! A membership removed, or a mesh not enabled, stops all of it and ends its streams.

use super::Fleet;
use super::credential;
use crate::MeshdConfig;
use crate::ingest;
use fleetmesh_ca::CertificateAuthority;
use fleetmesh_kube::egress::EgressPolicy;
use fleetmesh_kube::remote::{RemoteClusters, RemoteSettings};
use fleetmesh_kube::token_review::TokenReviewer;
use fleetmesh_server::{MeshState, Metrics, Registry, Router, ServerContext};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
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
    /// Signalled when the fleet changed.
    changed: Notify,
}

impl Members {
    /// Serves the members of `fleet`'s enabled meshes from now on, following its changes
    /// (see [`Members::fleet_changed`]).
    pub fn start(settings: MemberSettings, fleet: Arc<Fleet>) -> Arc<Members> {
        let members = Arc::new(Members {
            settings,
            serving: Mutex::default(),
            changed: Notify::new(),
        });
        let keeper = members.clone();
        let stop = members.settings.shutdown.clone();
        tokio::spawn(async move {
            loop {
                keeper.reconcile(&fleet).await;
                tokio::select! {
                    () = keeper.changed.notified() => {}
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

    /// The context serving `cluster`, if it is a member served now.
    pub fn context(&self, cluster: &str) -> Option<Arc<ServerContext>> {
        self.serving.lock().get(cluster).map(|m| m.context.clone())
    }

    /// Who reviews the tokens of `cluster`'s workloads, if it is served now.
    pub fn reviewer(&self, cluster: &str) -> Option<Arc<TokenReviewer>> {
        self.serving.lock().get(cluster).map(|m| m.reviewer.clone())
    }

    /// The clusters served now, with their projects.
    pub fn served(&self) -> BTreeMap<String, String> {
        let serving = self.serving.lock();
        serving
            .iter()
            .map(|(cluster, m)| (cluster.clone(), m.project.clone()))
            .collect()
    }

    /// Starts the members the fleet wants and stops the others.
    async fn reconcile(&self, fleet: &Fleet) {
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
        self.serving.lock().retain(|cluster, member| {
            let keep = wanted.get(cluster).is_some_and(|(project, dir)| {
                *project == member.project && *dir == member.credential
            });
            if !keep {
                tracing::info!(%cluster, project = %member.project, "member no longer served");
            }
            keep
        });
        for (cluster, (project, dir)) in wanted {
            if self.serving.lock().contains_key(&cluster) {
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
        let source = fleetmesh_kube::ClusterSource::start(
            client.clone(),
            cluster,
            &config.domain,
            &config.root_namespace,
            changes_tx.clone(),
        )
        .await?;
        let remotes = RemoteClusters::start(
            client.clone(),
            cluster,
            RemoteSettings {
                domain: config.domain.clone(),
                root_namespace: config.root_namespace.clone(),
                egress: settings.egress.clone(),
            },
            changes_tx.clone(),
        );
        let sources = ingest::Sources::new(
            &config,
            None,
            Some((Arc::new(source), Arc::new(remotes))),
            changes_tx,
        );
        let stop = settings.shutdown.child_token();
        let (states_tx, states) = watch::channel(Arc::new(MeshState::new(sources.snapshot())));
        spawn_until(&stop, ingest::publish_changes(sources, changes, states_tx));
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
    fn route(&self, cluster: Option<&str>) -> Result<Arc<ServerContext>, tonic::Status> {
        Ok(cluster
            .and_then(|c| self.members.context(c))
            .unwrap_or_else(|| self.own.clone()))
    }
}
