//! Generated resources shared between proxies: translation runs once per snapshot for
//! each distinct [`ConfigKey`], and every proxy with that key shares the encoded result.

use crate::generated::Generated;
use crate::service::MeshState;
use fleetmesh_xds::{ConfigKey, Proxy};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

#[derive(Default)]
pub struct GenerationCache {
    inner: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    /// The snapshot the entries were generated from; a newer one empties the cache.
    state: Weak<MeshState>,
    by_key: HashMap<ConfigKey, Arc<Generated>>,
}

impl GenerationCache {
    pub fn get(&self, state: &Arc<MeshState>, proxy: &Proxy) -> Arc<Generated> {
        let key = proxy.config_key();
        {
            let mut entries = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            if !entries.state.ptr_eq(&Arc::downgrade(state)) {
                entries.state = Arc::downgrade(state);
                entries.by_key.clear();
            } else if let Some(found) = entries.by_key.get(&key) {
                return found.clone();
            }
        }
        // Generate outside the lock: proxies with other keys need not wait.
        let generated = Arc::new(Generated::new(fleetmesh_xds::generate(
            &state.snapshot,
            proxy,
        )));
        let mut entries = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if entries.state.ptr_eq(&Arc::downgrade(state)) {
            entries.by_key.entry(key).or_insert(generated).clone()
        } else {
            generated
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetmesh_model::Snapshot;
    use fleetmesh_xds::{Interception, ProxyKind};

    fn proxy(pod: &str, namespace: &str) -> Proxy {
        Proxy {
            id: format!("sidecar~10.0.0.1~{pod}.{namespace}~{namespace}.svc.cluster.local"),
            kind: ProxyKind::Sidecar,
            ip: "10.0.0.1".into(),
            pod_name: pod.into(),
            namespace: namespace.into(),
            labels: [("app".to_string(), "reviews".to_string())].into(),
            service_account: "reviews".into(),
            istio_version: "1.28.0".into(),
            cluster_id: "c1".into(),
            mesh_id: "m".into(),
            interception: Interception::Redirect,
        }
    }

    #[test]
    fn identical_proxies_share_one_generation_per_snapshot() {
        let cache = GenerationCache::default();
        let first = Arc::new(MeshState::new(Snapshot::default()));
        let a = cache.get(&first, &proxy("reviews-1", "shop"));
        let b = cache.get(&first, &proxy("reviews-2", "shop"));
        assert!(
            Arc::ptr_eq(&a, &b),
            "pods of one deployment share resources"
        );
        let other = cache.get(&first, &proxy("reviews-1", "other"));
        assert!(
            !Arc::ptr_eq(&a, &other),
            "another namespace is generated apart"
        );
        let second = Arc::new(MeshState::new(Snapshot::default()));
        let c = cache.get(&second, &proxy("reviews-1", "shop"));
        assert!(!Arc::ptr_eq(&a, &c), "a new snapshot is generated anew");
        assert_eq!(*a, *c, "from equal snapshots, equal resources");
    }
}
