//! Multi-cluster endpoint discovery, Istio's way: a Secret in the mesh's root namespace
//! labelled `istio/multiCluster: "true"` (what `create-remote-secret` writes) holds, under
//! each data key, the kubeconfig of a remote cluster named by that key. meshd watches
//! such Secrets and the services of every cluster they name, so that this cluster's
//! proxies reach the remote endpoints. A new or rotated kubeconfig is picked up live (the
//! old connection serves until the new one has synced); a deleted Secret removes its
//! clusters; a broken one gives the Secret a Warning Event and touches nothing else.

pub mod kubeconfig;

use crate::discovery::ServiceDiscovery;
use crate::egress::EgressPolicy;
use crate::reflect::{Tasks, reflect};
use fleetmesh_model::service::Service;
use fleetmesh_model::trigger::{Origin, Trigger};
use k8s_openapi::api::core::v1::{Secret, Service as KubeService};
use kube::api::ListParams;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, Client, Resource};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::{self, UnboundedSender};
use tokio::task::JoinHandle;

/// The label of remote secrets.
pub const MULTICLUSTER_LABEL: &str = "istio/multiCluster";
/// How long a remote cluster's first full list may take before meshd retries.
const SYNC_TIMEOUT: Duration = Duration::from_secs(60);
/// Retries of an unreachable remote API server back off up to this.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// What every remote cluster is watched with.
#[derive(Clone)]
pub struct RemoteSettings {
    /// DNS domain of the services.
    pub domain: String,
    /// The mesh's root namespace (remote secrets live there; so does each cluster's
    /// `fleetmesh-install`, which names its location).
    pub root_namespace: String,
    /// Where tenant-written API server addresses may point.
    pub egress: EgressPolicy,
}

/// One remote cluster, as the last Secret naming it describes it.
struct Remote {
    /// The Secret (namespace/name) it comes from.
    secret: String,
    /// SHA-256 of its kubeconfig: a rotated one differs.
    fingerprint: [u8; 32],
    /// Its services, once connected and synced.
    discovery: Option<Arc<ServiceDiscovery>>,
    /// Connecting (or retrying) with the current kubeconfig.
    connecting: Option<JoinHandle<()>>,
}

impl Drop for Remote {
    fn drop(&mut self) {
        if let Some(task) = &self.connecting {
            task.abort();
        }
    }
}

type Remotes = Arc<Mutex<BTreeMap<String, Remote>>>;

/// The remote clusters named by one cluster's remote secrets.
pub struct RemoteClusters {
    remotes: Remotes,
    task: JoinHandle<()>,
}

impl RemoteClusters {
    /// Watches the remote secrets of the cluster `client` reaches (whose own id is
    /// `own_cluster`: a secret naming it is ignored). `changes` is signalled when a remote
    /// cluster's services change, or one joins or leaves.
    pub fn start(
        client: Client,
        own_cluster: &str,
        settings: RemoteSettings,
        changes: UnboundedSender<Trigger>,
    ) -> RemoteClusters {
        let remotes = Remotes::default();
        let (secret_changes, secret_events) = mpsc::unbounded_channel();
        let config = watcher::Config::default().labels(&format!("{MULTICLUSTER_LABEL}=true"));
        let api = Api::<Secret>::namespaced(client.clone(), &settings.root_namespace);
        let (secrets, watch) = reflect(api, (), config, Origin::RemoteCluster, secret_changes);
        let reconciler = Reconciler {
            own_cluster: own_cluster.into(),
            settings,
            remotes: remotes.clone(),
            changes,
            events: Recorder::new(
                client,
                Reporter {
                    controller: "meshd".into(),
                    instance: None,
                },
            ),
        };
        let task = tokio::spawn(reconciler.run(secrets, secret_events, watch));
        RemoteClusters { remotes, task }
    }

    /// The services of each connected remote cluster.
    pub fn services(&self) -> Vec<Vec<Service>> {
        let connected: Vec<Arc<ServiceDiscovery>> = self
            .remotes
            .lock()
            .values()
            .filter_map(|r| r.discovery.clone())
            .collect();
        connected.iter().map(|d| d.services()).collect()
    }

    /// The names of the remote clusters whose services are served now.
    pub fn connected(&self) -> Vec<String> {
        let remotes = self.remotes.lock();
        remotes
            .iter()
            .filter(|(_, r)| r.discovery.is_some())
            .map(|(name, _)| name.clone())
            .collect()
    }
}

impl Drop for RemoteClusters {
    fn drop(&mut self) {
        self.task.abort();
        self.remotes.lock().clear();
    }
}

/// Keeps the remote clusters what the secrets say.
struct Reconciler {
    own_cluster: String,
    settings: RemoteSettings,
    remotes: Remotes,
    changes: UnboundedSender<Trigger>,
    events: Recorder,
}

impl Reconciler {
    async fn run(
        self,
        secrets: Store<Secret>,
        mut events: mpsc::UnboundedReceiver<Trigger>,
        watch: JoinHandle<()>,
    ) {
        let _watch = Tasks::from(vec![watch]);
        let this = Arc::new(self);
        while events.recv().await.is_some() {
            while events.try_recv().is_ok() {}
            this.reconcile(&secrets.state());
        }
    }

    /// Starts, reconnects and drops remote clusters to match `secrets`.
    fn reconcile(self: &Arc<Self>, secrets: &[Arc<Secret>]) {
        let mut wanted: BTreeMap<String, (&Secret, &str)> = BTreeMap::new();
        for secret in secrets {
            for (cluster, kubeconfig) in secret.data.iter().flatten() {
                if *cluster == self.own_cluster {
                    continue;
                }
                let Ok(text) = std::str::from_utf8(&kubeconfig.0) else {
                    self.warn(secret, format!("data key {cluster}: not UTF-8 text"));
                    continue;
                };
                if let Some((other, _)) = wanted.get(cluster) {
                    let other = describe(other);
                    self.warn(
                        secret,
                        format!(
                            "cluster {cluster} is named by {other} already; this one is ignored"
                        ),
                    );
                    continue;
                }
                wanted.insert(cluster.clone(), (secret, text));
            }
        }
        let mut remotes = self.remotes.lock();
        let before = remotes.len();
        remotes.retain(|cluster, _| wanted.contains_key(cluster));
        let mut changed = remotes.len() != before;
        for (cluster, (secret, text)) in wanted {
            let fingerprint: [u8; 32] = Sha256::digest(text.as_bytes()).into();
            let remote = remotes.entry(cluster.clone()).or_insert_with(|| Remote {
                secret: describe(secret),
                fingerprint: [0; 32],
                discovery: None,
                connecting: None,
            });
            if remote.fingerprint == fingerprint {
                continue;
            }
            remote.fingerprint = fingerprint;
            remote.secret = describe(secret);
            if let Some(task) = remote.connecting.take() {
                task.abort();
            }
            let connect =
                self.clone()
                    .connect(cluster, secret.clone(), text.to_string(), fingerprint);
            remote.connecting = Some(tokio::spawn(connect));
            changed = true;
        }
        drop(remotes);
        if changed {
            let _ = self.changes.send(Trigger::update(Origin::RemoteCluster));
        }
    }

    /// Connects to `cluster` with `kubeconfig` until its services are synced (retrying an
    /// unreachable API server), then serves them instead of any earlier connection's.
    async fn connect(
        self: Arc<Self>,
        cluster: String,
        secret: Secret,
        kubeconfig: String,
        fingerprint: [u8; 32],
    ) {
        let mut backoff = Duration::from_secs(1);
        let mut reported = false;
        let discovery = loop {
            match self.try_connect(&cluster, &kubeconfig).await {
                Ok(discovery) => break discovery,
                Err(Failure::Invalid(reason)) => {
                    self.warn(&secret, format!("cluster {cluster}: {reason}"));
                    return;
                }
                Err(Failure::Unreachable(reason)) => {
                    tracing::warn!(%cluster, %reason, retry_in = ?backoff, "remote cluster unreachable");
                    if !reported {
                        self.warn(&secret, format!("cluster {cluster}: {reason} (retrying)"));
                        reported = true;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        };
        let services = discovery.service_count();
        let mut remotes = self.remotes.lock();
        if let Some(remote) = remotes
            .get_mut(&cluster)
            .filter(|r| r.fingerprint == fingerprint)
        {
            remote.discovery = Some(Arc::new(discovery));
            // This task is ending: nothing to abort any more.
            remote.connecting = None;
            tracing::info!(%cluster, services, secret = %remote.secret, "remote cluster connected");
        }
        drop(remotes);
        let _ = self.changes.send(Trigger::update(Origin::RemoteCluster));
    }

    async fn try_connect(&self, cluster: &str, text: &str) -> Result<ServiceDiscovery, Failure> {
        let config = kubeconfig::client_config(text, &self.settings.egress)
            .await
            .map_err(|e| Failure::Invalid(e.to_string()))?;
        let client = Client::try_from(config).map_err(|e| Failure::Invalid(e.to_string()))?;
        // One small read first: a refused credential or a dead address is told now, not
        // by a watch retrying forever in silence.
        Api::<KubeService>::all(client.clone())
            .list_metadata(&ListParams::default().limit(1))
            .await
            .map_err(|e| Failure::Unreachable(e.to_string()))?;
        let discovery = ServiceDiscovery::start(
            &client,
            cluster,
            &self.settings.domain,
            &self.settings.root_namespace,
            &self.changes,
        );
        tokio::time::timeout(SYNC_TIMEOUT, discovery.wait_synced())
            .await
            .map_err(|_| Failure::Unreachable(format!("no full list within {SYNC_TIMEOUT:?}")))?
            .map_err(|e| Failure::Unreachable(e.to_string()))?;
        Ok(discovery)
    }

    /// Tells the Secret's owner, on the Secret, what is wrong with it (and the log).
    fn warn(&self, secret: &Secret, note: String) {
        tracing::warn!(secret = %describe(secret), %note, "remote secret not used");
        let event = Event {
            type_: EventType::Warning,
            reason: "InvalidRemoteSecret".into(),
            note: Some(crate::source::truncate(
                &note,
                crate::source::EVENT_NOTE_LIMIT,
            )),
            action: "Connect".into(),
            secondary: None,
        };
        let reference = secret.object_ref(&());
        let events = self.events.clone();
        tokio::spawn(async move {
            if let Err(e) = events.publish(&event, &reference).await {
                tracing::warn!(error = %e, "could not record a remote secret's problem as an Event");
            }
        });
    }
}

/// Why a remote cluster is not served.
enum Failure {
    /// The kubeconfig is refused: nothing changes until the Secret does.
    Invalid(String),
    /// The API server did not answer or refused: retried.
    Unreachable(String),
}

fn describe(secret: &Secret) -> String {
    format!(
        "{}/{}",
        secret.metadata.namespace.as_deref().unwrap_or_default(),
        secret.metadata.name.as_deref().unwrap_or_default()
    )
}
