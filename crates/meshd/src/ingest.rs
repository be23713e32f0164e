//! The ingest pipeline, from watched objects to the state proxies are served from:
//!
//! 1. **sources**: the local config directory ([`LocalSource`]) and, with a cluster, its
//!    Services, Pods, Secrets, MeshConfig and Istio objects ([`ClusterSource`]), each
//!    validated as it is read, and the services of the remote clusters its remote secrets
//!    name ([`RemoteClusters`]); JWKS documents meshd fetched.
//! 2. **snapshot**: [`Sources::snapshot`] builds one immutable [`Snapshot`] of them all.
//! 3. **publish**: [`publish_changes`] builds the first state, debounces change signals,
//!    and publishes the next
//!    [`MeshState`] when a proxy could tell it from the current one. Every xDS stream
//!    watches the published state.

use crate::MeshdConfig;
use crate::jwks::JwksCache;
use crate::local::LocalSource;
use crate::mesh_config::MeshConfig;
use fleetmesh_kube::ClusterSource;
use fleetmesh_kube::egress::EgressPolicy;
use fleetmesh_kube::remote::{RemoteClusters, RemoteSettings};
use fleetmesh_model::trigger::Trigger;
use fleetmesh_model::{Lookups, Snapshot, SnapshotInput};
use fleetmesh_server::debounce::Debounce;
use fleetmesh_server::{MeshState, Metrics};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Everything a snapshot is built from.
pub struct Sources {
    /// The config directory (meshd's own mesh; members have none).
    local: Option<Arc<LocalSource>>,
    cluster: Option<Arc<ClusterSource>>,
    remotes: Option<Arc<RemoteClusters>>,
    mesh_config: MeshConfig,
    jwks: Arc<JwksCache>,
    domain: String,
    cluster_id: String,
    /// How change signals are merged before a snapshot is built.
    pub debounce: Debounce,
}

/// Where `jwksUri`s may point: `egress`, less `--jwks-egress-deny` (checked when meshd
/// started).
pub fn jwks_egress(config: &MeshdConfig, egress: &EgressPolicy) -> EgressPolicy {
    egress
        .also_denying(&config.jwks_egress_deny)
        .expect("--jwks-egress-deny is checked when meshd starts")
}

impl Sources {
    /// The sources of `config`'s mesh: the local directory (if any), and the cluster
    /// with its remote clusters (if any); `changes` is signalled when fetched keys arrive
    /// (from where `egress` lets meshd fetch them).
    pub fn new(
        config: &MeshdConfig,
        egress: &fleetmesh_kube::egress::EgressPolicy,
        local: Option<Arc<LocalSource>>,
        cluster: Option<(Arc<ClusterSource>, Arc<RemoteClusters>)>,
        changes: mpsc::UnboundedSender<Trigger>,
    ) -> Sources {
        let (cluster, remotes) = cluster.unzip();
        Sources {
            local,
            cluster,
            remotes,
            mesh_config: MeshConfig::new(fleetmesh_model::MeshSettings {
                root_namespace: config.root_namespace.clone(),
                trust_domain: config.trust_domain.clone(),
                ..Default::default()
            }),
            jwks: JwksCache::new(changes, jwks_egress(config, egress)),
            domain: config.domain.clone(),
            cluster_id: config.cluster_id.clone(),
            debounce: Debounce {
                after: config.debounce_after,
                max_delay: config.debounce_max,
            },
        }
    }

    /// Reads every source as it is now and builds the snapshot.
    pub fn snapshot(&self) -> Snapshot {
        let cluster = self.cluster.as_deref();
        let resources = cluster.map(ClusterSource::resources).unwrap_or_default();
        let mesh_text = cluster.and_then(ClusterSource::mesh_config);
        let input = SnapshotInput {
            resources: resources.iter().collect(),
            services: self.services(),
            workloads: cluster.map(ClusterSource::workloads).unwrap_or_default(),
            domain: self.domain.clone(),
            mesh: self.mesh_config.settings(mesh_text.as_deref()),
            cluster_id: self.cluster_id.clone(),
            credentials: cluster.map(ClusterSource::credentials).unwrap_or_default(),
            lookups: self,
        };
        match &self.local {
            Some(local) => local.snapshot(input),
            None => Snapshot::build(input),
        }
    }
}

impl Sources {
    /// The cluster's services, with the endpoints of every remote cluster joined.
    fn services(&self) -> Vec<fleetmesh_model::Service> {
        let Some(cluster) = &self.cluster else {
            return Vec::new();
        };
        let remote = self.remotes.iter().flat_map(|r| r.services());
        fleetmesh_model::multicluster::merge_clusters(
            std::iter::once(cluster.services()).chain(remote),
        )
    }
}

impl Lookups for Sources {
    fn secret_readers(&self, wanted: BTreeSet<(String, String)>) -> BTreeSet<(String, String)> {
        match &self.cluster {
            Some(cluster) => cluster.secret_readers(wanted),
            None => BTreeSet::new(),
        }
    }

    fn jwks(&self, uris: BTreeMap<&str, Option<Duration>>) -> BTreeMap<String, String> {
        self.jwks.resolve(uris)
    }
}

/// Watches the cluster `client` reaches as `config.cluster_id`: its config
/// ([`ClusterSource`], returned once its watches have their first full lists) and the
/// remote clusters its remote secrets name. Every change signals `changes`.
pub async fn watch_cluster(
    client: &kube::Client,
    config: &MeshdConfig,
    egress: &EgressPolicy,
    changes: &mpsc::UnboundedSender<Trigger>,
) -> anyhow::Result<(Arc<ClusterSource>, Arc<RemoteClusters>)> {
    let source = ClusterSource::start(
        client.clone(),
        &config.cluster_id,
        &config.domain,
        &config.root_namespace,
        changes.clone(),
    )
    .await?;
    let remotes = RemoteClusters::start(
        client.clone(),
        &config.cluster_id,
        RemoteSettings {
            domain: config.domain.clone(),
            root_namespace: config.root_namespace.clone(),
            egress: egress.clone(),
        },
        changes.clone(),
    );
    Ok((Arc::new(source), Arc::new(remotes)))
}

/// The state built from `sources` now, which every xDS stream watches, and the work that
/// publishes the next after each (debounced) change signal until `changes` closes. A
/// change no proxy could tell apart (a Pod's status, an unrelated object) publishes
/// nothing. Each push counts its changes in `metrics`.
pub fn publish_changes(
    sources: Sources,
    changes: mpsc::UnboundedReceiver<Trigger>,
    metrics: Arc<Metrics>,
) -> (
    watch::Receiver<Arc<MeshState>>,
    impl std::future::Future<Output = ()> + Send + 'static,
) {
    let (states, receiver) = watch::channel(Arc::new(MeshState::new(sources.snapshot())));
    let publishing = async move {
        let publish = |triggers: Vec<Trigger>| {
            metrics.record_push(&triggers);
            let next = states.borrow().next(sources.snapshot());
            if let Some(next) = next {
                states.send_replace(Arc::new(next));
            }
        };
        sources.debounce.run(changes, publish).await;
    };
    (receiver, publishing)
}
