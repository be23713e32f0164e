//! Connected proxies and what each has acknowledged: the source of `/debug/syncz` and
//! `/debug/config_dump`.

use crate::generated::Generated;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TypeStatus {
    pub sent_version: String,
    pub sent_nonce: String,
    pub acked_version: String,
    pub last_nack: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ProxyStatus {
    pub proxy_id: String,
    pub proxy_version: String,
    /// The revision that injected it (its Pod's `istio.io/rev`), if known.
    pub revision: Option<String>,
    pub connected_at: SystemTime,
    /// `sotw` or `delta`.
    pub protocol: &'static str,
    /// By short type (`cds`, `eds`, `lds`, `rds`).
    pub types: BTreeMap<&'static str, TypeStatus>,
    pub resources: Arc<Generated>,
}

#[derive(Default)]
pub struct Registry {
    // Held only for map updates, never across an await.
    connections: Mutex<BTreeMap<u64, ProxyStatus>>,
}

impl Registry {
    pub fn insert(&self, id: u64, status: ProxyStatus) {
        self.lock().insert(id, status);
    }

    pub fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    pub fn update(&self, id: u64, change: impl FnOnce(&mut ProxyStatus)) {
        if let Some(status) = self.lock().get_mut(&id) {
            change(status);
        }
    }

    /// Every connection, oldest first.
    pub fn list(&self) -> Vec<ProxyStatus> {
        self.lock().values().cloned().collect()
    }

    /// The newest connection of proxy `id`.
    pub fn find(&self, proxy_id: &str) -> Option<ProxyStatus> {
        self.lock()
            .values()
            .rev()
            .find(|s| s.proxy_id == proxy_id)
            .cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, ProxyStatus>> {
        self.connections.lock().unwrap_or_else(|e| e.into_inner())
    }
}
