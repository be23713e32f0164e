//! Connected proxies and what each has acknowledged: the source of `/debug/syncz` and
//! `/debug/config_dump`.

use crate::generated::Generated;
pub use crate::subscription::TypeStatus;
use fleetmesh_xds::ResourceType;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

#[derive(Debug, Clone)]
pub struct ProxyStatus {
    pub proxy_id: String,
    pub proxy_version: String,
    /// The revision that injected it (its Pod's `istio.io/rev`), if known.
    pub revision: Option<String>,
    pub connected_at: SystemTime,
    /// `sotw` or `delta`.
    pub protocol: &'static str,
    pub types: BTreeMap<ResourceType, TypeStatus>,
    pub resources: Arc<Generated>,
}

#[derive(Default)]
pub struct Registry {
    // Held only for map updates, never across an await.
    connections: Mutex<BTreeMap<u64, ProxyStatus>>,
}

impl Registry {
    pub fn insert(&self, id: u64, status: ProxyStatus) {
        self.connections.lock().insert(id, status);
    }

    pub fn remove(&self, id: u64) {
        self.connections.lock().remove(&id);
    }

    pub fn update(&self, id: u64, change: impl FnOnce(&mut ProxyStatus)) {
        if let Some(status) = self.connections.lock().get_mut(&id) {
            change(status);
        }
    }

    /// Every connection, oldest first.
    pub fn list(&self) -> Vec<ProxyStatus> {
        self.connections.lock().values().cloned().collect()
    }

    /// The newest connection of proxy `id`.
    pub fn find(&self, proxy_id: &str) -> Option<ProxyStatus> {
        self.connections
            .lock()
            .values()
            .rev()
            .find(|s| s.proxy_id == proxy_id)
            .cloned()
    }
}
