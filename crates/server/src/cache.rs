//! Generated resources shared between proxies. Per snapshot, translation runs once for
//! each distinct [`SharedKey`] (the outbound clusters, endpoints and routes: most of a
//! proxy's config, the same for a namespace) and once for each distinct [`ConfigKey`]
//! (the workload's own part); proxies with equal keys share the results.

use crate::generated::Generated;
use crate::service::MeshState;
use fleetmesh_xds::{ConfigKey, Proxy, SharedKey};
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
    shared: HashMap<SharedKey, Arc<Generated>>,
    by_key: HashMap<ConfigKey, Arc<Generated>>,
}

impl Entries {
    /// Forgets everything generated from an older snapshot; whether `state` is current.
    fn current(&mut self, state: &Arc<MeshState>) -> bool {
        if self.state.ptr_eq(&Arc::downgrade(state)) {
            return true;
        }
        self.state = Arc::downgrade(state);
        self.shared.clear();
        self.by_key.clear();
        false
    }
}

impl GenerationCache {
    pub fn get(&self, state: &Arc<MeshState>, proxy: &Proxy) -> Arc<Generated> {
        let key = proxy.config_key();
        {
            let mut entries = self.lock();
            if entries.current(state)
                && let Some(found) = entries.by_key.get(&key)
            {
                return found.clone();
            }
        }
        // A miss: generate outside the lock, so proxies with other keys need not wait.
        let shared_key = SharedKey::new(&state.snapshot, proxy);
        let found = {
            let mut entries = self.lock();
            entries.current(state);
            entries.shared.get(&shared_key).cloned()
        };
        let shared = found.unwrap_or_else(|| {
            let generated = Generated::new(fleetmesh_xds::generate_shared(&state.snapshot, proxy));
            self.keep(state, |e| &mut e.shared, shared_key, generated)
        });
        let own = fleetmesh_xds::generate_own(&state.snapshot, proxy);
        self.keep(
            state,
            |e| &mut e.by_key,
            key,
            Generated::compose(&shared, own),
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers `generated` under `key` while `state` is still the newest snapshot (a
    /// proxy that got there first wins); returns what is remembered.
    fn keep<K: std::hash::Hash + Eq>(
        &self,
        state: &Arc<MeshState>,
        map: impl FnOnce(&mut Entries) -> &mut HashMap<K, Arc<Generated>>,
        key: K,
        generated: Generated,
    ) -> Arc<Generated> {
        let generated = Arc::new(generated);
        let mut entries = self.lock();
        if !entries.state.ptr_eq(&Arc::downgrade(state)) {
            return generated;
        }
        map(&mut entries).entry(key).or_insert(generated).clone()
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

    #[test]
    fn workloads_of_a_namespace_share_the_outbound_part() {
        use fleetmesh_xds::{CLUSTER_TYPE, ENDPOINT_TYPE, ROUTE_TYPE};
        let cache = GenerationCache::default();
        let state = Arc::new(MeshState::new(Snapshot::default()));
        let reviews = proxy("reviews-1", "shop");
        let mut ratings = proxy("ratings-1", "shop");
        ratings.labels = [("app".to_string(), "ratings".to_string())].into();
        let a = cache.get(&state, &reviews);
        let b = cache.get(&state, &ratings);
        assert!(!Arc::ptr_eq(&a, &b), "other labels, other own part");
        for shared in [ENDPOINT_TYPE, ROUTE_TYPE] {
            assert!(
                Arc::ptr_eq(a.of_type(shared).unwrap(), b.of_type(shared).unwrap()),
                "{shared} is one copy"
            );
        }
        for p in [&reviews, &ratings] {
            let whole = Generated::new(fleetmesh_xds::generate(&state.snapshot, p));
            assert_eq!(*cache.get(&state, p), whole, "shared + own = the whole");
            assert_eq!(
                cache
                    .get(&state, p)
                    .of_type(CLUSTER_TYPE)
                    .unwrap()
                    .entries
                    .len(),
                whole.of_type(CLUSTER_TYPE).unwrap().entries.len()
            );
        }
    }
}
