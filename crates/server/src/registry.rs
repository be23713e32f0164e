//! Connected proxies and what each has acknowledged: the source of `/debug/syncz` and
//! `/debug/config_dump`.

use crate::generated::Generated;
pub use crate::subscription::TypeStatus;
use fleetmesh_xds::ResourceType;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

/// One connected stream, as `/debug/syncz` and `/debug/config_dump` show it.
#[derive(Debug, Clone)]
pub struct ProxyStatus {
    /// The node id the proxy sent.
    pub proxy_id: String,
    /// Its Istio version (node metadata `ISTIO_VERSION`).
    pub proxy_version: String,
    /// `sidecar` or `router`, as its node id says.
    pub proxy_type: &'static str,
    /// The cluster it runs in (node metadata `CLUSTER_ID`).
    pub cluster_id: String,
    /// The revision that injected it (its Pod's `istio.io/rev`), if known.
    pub revision: Option<String>,
    /// When the stream opened.
    pub connected_at: SystemTime,
    /// `sotw` or `delta`.
    pub protocol: &'static str,
    /// What was sent and ACKed, per type.
    pub types: BTreeMap<ResourceType, TypeStatus>,
    /// What the proxy is being served now.
    pub resources: Arc<Generated>,
}

/// Every open stream, by connection number.
#[derive(Default)]
pub struct Registry {
    // Held only for map updates, never across an await.
    connections: Mutex<BTreeMap<u64, ProxyStatus>>,
    /// The last connection number given out.
    last_id: std::sync::atomic::AtomicU64,
}

impl Registry {
    /// A number for a new stream, for the registry and logs (unique across meshes).
    pub fn next_id(&self) -> u64 {
        self.last_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1
    }

    /// Records a new stream.
    pub fn insert(&self, id: u64, status: ProxyStatus) {
        self.connections.lock().insert(id, status);
    }

    /// Forgets a closed stream.
    pub fn remove(&self, id: u64) {
        self.connections.lock().remove(&id);
    }

    /// Changes a stream's record, if it is still open.
    pub fn update(&self, id: u64, change: impl FnOnce(&mut ProxyStatus)) {
        if let Some(status) = self.connections.lock().get_mut(&id) {
            change(status);
        }
    }

    /// Every connection, oldest first.
    pub fn list(&self) -> Vec<ProxyStatus> {
        self.connections.lock().values().cloned().collect()
    }

    /// The newest connection of proxy `id`: its node id, or `POD.NAMESPACE` as istioctl
    /// names proxies (the node id's third part).
    pub fn find(&self, proxy_id: &str) -> Option<ProxyStatus> {
        self.connections
            .lock()
            .values()
            .rev()
            .find(|s| s.proxy_id == proxy_id || s.proxy_id.split('~').nth(2) == Some(proxy_id))
            .cloned()
    }
}
