//! One Kubernetes cluster as a config source: its services (`discovery`), Istio objects,
//! MeshConfig and TLS credentials, watched by kube-rs reflectors. A broken watch (API
//! server restart, 410 Gone) resumes by itself with backoff.

use crate::crds::{IstioKind, KINDS};
use crate::discovery::{ServiceDiscovery, watch_named};
use crate::reflect::{Tasks, reflect, watch};
use fleetmesh_model::service::{Service, Workload};
use fleetmesh_model::trigger::{Origin, Trigger};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::{Api, Client, Resource};
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;

const SYNC_TIMEOUT: Duration = Duration::from_secs(60);
/// Istio's MeshConfig lives in this ConfigMap of the root namespace, key `mesh`.
const MESH_CONFIG_MAP: &str = "istio";
/// events.k8s.io limits an Event's note to 1 kB.
pub(crate) const EVENT_NOTE_LIMIT: usize = 1024;

/// One cluster as a config source: its services, Secrets, MeshConfig and Istio objects,
/// each kept by a watch.
pub struct ClusterSource {
    cluster_id: String,
    discovery: ServiceDiscovery,
    /// Istio config, for the kinds whose CRDs the cluster serves (kinds whose CRDs are
    /// installed later join as they appear).
    istio: IstioWatches,
    /// ConfigMap `istio` of the root namespace: Istio's MeshConfig.
    mesh_config: Store<ConfigMap>,
    /// Gateway TLS credentials (`credentialName`).
    secrets: Store<Secret>,
    secret_access: std::sync::Arc<crate::credentials::SecretAccess>,
    /// Tells users, on the object itself, why their config was rejected.
    events: Recorder,
    /// Invalid objects already reported (kind, namespace/name, resourceVersion).
    reported: Mutex<BTreeSet<(String, String, String)>>,
    /// Held for their lifetime: dropping ends them.
    _watches: Tasks,
}

/// The watched Istio kinds: (kind, its API resource, its objects).
type IstioWatches =
    std::sync::Arc<Mutex<Vec<(&'static IstioKind, ApiResource, Store<DynamicObject>)>>>;

/// How often meshd looks for Istio CRDs installed after it started.
const DISCOVERY_INTERVAL: Duration = Duration::from_secs(10);

/// Why a cluster's watches did not start.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The first lists took too long.
    #[error(
        "cluster {cluster}: no full list of Services, EndpointSlices and Pods within {SYNC_TIMEOUT:?} (is the API server reachable, and may this identity list them?)"
    )]
    Timeout {
        /// The cluster's name.
        cluster: String,
    },
    /// A watch stopped before its first list (meshd is shutting down).
    #[error("cluster {cluster}: a watch ended before its first list")]
    WatchEnded {
        /// The cluster's name.
        cluster: String,
        /// The store's writer, gone.
        source: reflector::store::WriterDropped,
    },
}

impl ClusterSource {
    /// Starts watching; returns once every watch has its first full list. Each event
    /// afterwards signals `changes`.
    pub async fn start(
        client: Client,
        cluster_id: &str,
        domain: &str,
        mesh_namespace: &str,
        changes: UnboundedSender<Trigger>,
    ) -> Result<ClusterSource, SyncError> {
        let discovery =
            ServiceDiscovery::start(&client, cluster_id, domain, mesh_namespace, &changes);
        let (mesh_config, d) = watch_named::<ConfigMap>(
            Api::namespaced(client.clone(), mesh_namespace),
            MESH_CONFIG_MAP,
            Origin::Global,
            changes.clone(),
        );
        // Not Helm's releases nor service-account tokens, which are never credentials (as
        // istiod filters them too): in a real cluster they are most Secrets' bytes.
        let credentials = watcher::Config::default()
            .fields("type!=helm.sh/release.v1,type!=kubernetes.io/service-account-token");
        let (secrets, e) = reflect::<Secret>(
            Api::all(client.clone()),
            (),
            credentials,
            Origin::Secret,
            changes.clone(),
        );
        let secret_access = crate::credentials::SecretAccess::new(client.clone(), changes.clone());
        let mut watches = vec![d, e];
        let istio = IstioWatches::default();
        let istio_tasks = discover_istio_kinds(&client, cluster_id, &istio, &changes).await;
        watches.push(tokio::spawn(keep_discovering(
            client.clone(),
            cluster_id.to_string(),
            istio.clone(),
            changes.clone(),
            istio_tasks,
        )));
        let source = ClusterSource {
            cluster_id: cluster_id.into(),
            discovery,
            istio,
            mesh_config,
            secrets,
            secret_access,
            reported: Mutex::default(),
            events: Recorder::new(
                client,
                Reporter {
                    controller: "meshd".into(),
                    instance: None,
                },
            ),
            _watches: watches.into(),
        };
        let ready = async {
            source.discovery.wait_synced().await?;
            source.mesh_config.wait_until_ready().await?;
            source.secrets.wait_until_ready().await?;
            let stores: Vec<Store<DynamicObject>> = source
                .istio
                .lock()
                .iter()
                .map(|(_, _, store)| store.clone())
                .collect();
            for store in stores {
                store.wait_until_ready().await?;
            }
            Ok::<(), reflector::store::WriterDropped>(())
        };
        let cluster = || cluster_id.to_string();
        tokio::time::timeout(SYNC_TIMEOUT, ready)
            .await
            .map_err(|_| SyncError::Timeout { cluster: cluster() })?
            .map_err(|source| SyncError::WatchEnded {
                cluster: cluster(),
                source,
            })?;
        tracing::info!(
            cluster = cluster_id,
            services = source.discovery.service_count(),
            "cluster watches synced"
        );
        Ok(source)
    }

    /// The `mesh` text of ConfigMap `istio` (Istio's MeshConfig), if there is one.
    pub fn mesh_config(&self) -> Option<String> {
        let maps = self.mesh_config.state();
        maps.first()?.data.as_ref()?.get("mesh").cloned()
    }

    /// The TLS credentials among the cluster's Secrets, by (namespace, name).
    pub fn credentials(
        &self,
    ) -> BTreeMap<(String, String), std::sync::Arc<fleetmesh_model::Credential>> {
        let secrets = self.secrets.state();
        crate::credentials::credentials(secrets.iter().map(|s| s.as_ref()))
    }

    /// Those of `wanted` (namespace, service account) the cluster lets read their
    /// namespace's Secrets, as far as known now (unknown ones are asked in the
    /// background; the answer triggers a change).
    pub fn secret_readers(&self, wanted: BTreeSet<(String, String)>) -> BTreeSet<(String, String)> {
        self.secret_access.readers(wanted)
    }

    /// The cluster's valid Istio config. Invalid objects are left out (never pushed) and
    /// reported once per version.
    pub fn resources(&self) -> Vec<fleetmesh_api::Resource> {
        let mut valid = Vec::new();
        for (kind, resource, store) in self.istio.lock().iter() {
            for object in store.state() {
                match self.parse(kind, &object) {
                    Ok(resource) => valid.push(resource),
                    Err(errors) => self.report(kind, resource, &object, &errors),
                }
            }
        }
        valid
    }

    /// The object as a user would have written it, through the same parser and validator
    /// as local files.
    fn parse(
        &self,
        kind: &IstioKind,
        object: &DynamicObject,
    ) -> Result<fleetmesh_api::Resource, Vec<String>> {
        kind.load(object).map_err(|(described, problems)| {
            let origin = format!("cluster {}", self.cluster_id);
            problems
                .iter()
                .map(|p| format!("{origin}: {described}: {p}"))
                .collect()
        })
    }

    fn report(
        &self,
        kind: &IstioKind,
        resource: &ApiResource,
        object: &DynamicObject,
        errors: &[String],
    ) {
        let key = (
            kind.kind.to_string(),
            format!(
                "{}/{}",
                object.metadata.namespace.as_deref().unwrap_or(""),
                object.metadata.name.as_deref().unwrap_or("")
            ),
            object.metadata.resource_version.clone().unwrap_or_default(),
        );
        let mut reported = self.reported.lock();
        if !reported.insert(key) {
            return;
        }
        for error in errors {
            tracing::error!(%error, "rejected Istio config from the cluster; it is not pushed");
        }
        let event = Event {
            type_: EventType::Warning,
            reason: "InvalidConfig".into(),
            note: Some(truncate(
                &format!("not applied: {}", errors.join("; ")),
                EVENT_NOTE_LIMIT,
            )),
            action: "Validate".into(),
            secondary: None,
        };
        let reference = object.object_ref(resource);
        let events = self.events.clone();
        tokio::spawn(async move {
            if let Err(e) = events.publish(&event, &reference).await {
                tracing::warn!(error = %e, "could not record the rejection as an Event");
            }
        });
    }

    /// The cluster's Pods, for matching proxies to what they run in.
    pub fn workloads(&self) -> Vec<Workload> {
        self.discovery.workloads()
    }

    /// The cluster's services, each with the ready endpoints of its EndpointSlices.
    pub fn services(&self) -> Vec<Service> {
        self.discovery.services()
    }
}

/// Starts watching each Istio kind the cluster serves and `istio` does not watch yet;
/// returns the watch tasks.
async fn discover_istio_kinds(
    client: &Client,
    cluster_id: &str,
    istio: &IstioWatches,
    changes: &UnboundedSender<Trigger>,
) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    for kind in &KINDS {
        let watched = istio
            .lock()
            .iter()
            .any(|(k, _, _)| k.kind == kind.kind && k.group == kind.group);
        if watched {
            continue;
        }
        let gvk = GroupVersionKind::gvk(kind.group, kind.versions[0], kind.kind);
        match kube::discovery::pinned_kind(client, &gvk).await {
            Ok((resource, _)) => {
                let api = Api::all_with(client.clone(), &resource);
                let (store, task) = watch::<DynamicObject>(
                    api,
                    resource.clone(),
                    Origin::Config(kind.kind),
                    changes.clone(),
                );
                istio.lock().push((kind, resource, store));
                tasks.push(task);
                tracing::info!(
                    cluster = cluster_id,
                    kind = kind.kind,
                    "watching Istio kind"
                );
            }
            Err(_) => tracing::debug!(
                cluster = cluster_id,
                kind = kind.kind,
                "the cluster does not serve this Istio kind (its CRD is not installed)"
            ),
        }
    }
    tasks
}

/// Picks up Istio CRDs installed after meshd started, until aborted (which also stops
/// the watches it started).
async fn keep_discovering(
    client: Client,
    cluster_id: String,
    istio: IstioWatches,
    changes: UnboundedSender<Trigger>,
    tasks: Vec<JoinHandle<()>>,
) {
    let mut started = Tasks::from(tasks);
    loop {
        tokio::time::sleep(DISCOVERY_INTERVAL).await;
        if istio.lock().len() == KINDS.len() {
            continue;
        }
        started.extend(discover_istio_kinds(&client, &cluster_id, &istio, &changes).await);
    }
}

/// `text` cut to at most `limit` bytes, on a character boundary.
pub(crate) fn truncate(text: &str, limit: usize) -> String {
    let mut end = text.len().min(limit);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}
