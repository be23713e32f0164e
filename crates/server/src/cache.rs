//! Generated resources shared between proxies. Per snapshot, translation runs once for
//! each distinct [`SharedKey`] (the outbound clusters, endpoints and routes: most of a
//! proxy's config, the same for a namespace) and once for each distinct [`ConfigKey`]
//! (the workload's own part); proxies with equal keys share the results. After a change
//! to endpoints or VirtualServices alone (most changes in a busy mesh), what was generated
//! before is patched: only the changed hosts' clusters and endpoints, or the routes (and
//! proxies' own parts), are translated again.

use crate::generated::Generated;
use crate::state::MeshState;
use fleetmesh_model::{PatchableChange, Snapshot};
use fleetmesh_xds::{ConfigKey, Proxy, ProxyKind, SharedKey};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::{Arc, Weak};

#[derive(Default)]
pub struct GenerationCache {
    inner: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    /// The snapshot the entries were generated from, and its id; a newer one moves them
    /// to the earlier ones if it can be patched from them, else empties the cache.
    state: Weak<MeshState>,
    state_id: u64,
    shared: HashMap<SharedKey, Arc<Generated>>,
    by_key: HashMap<ConfigKey, Arc<Generated>>,
    /// What was generated for recent states that differ from the current one only in
    /// endpoints and VirtualServices, each with the id of its state: on a miss, patched
    /// instead of generated.
    earlier_shared: HashMap<SharedKey, (u64, Arc<Generated>)>,
    earlier_by_key: HashMap<ConfigKey, (u64, Arc<Generated>)>,
}

impl Entries {
    /// Moves to `state` if it is newer (keeping what can be patched); whether it was
    /// already current.
    fn current(&mut self, state: &Arc<MeshState>) -> bool {
        if self.state.ptr_eq(&Arc::downgrade(state)) {
            return true;
        }
        if state.id < self.state_id {
            // A proxy still on an older state: served, but not at the newer ones' cost.
            return false;
        }
        if state.changed_since(self.state_id).is_some() {
            let id = self.state_id;
            let shared = self.shared.drain().map(|(k, g)| (k, (id, g)));
            self.earlier_shared.extend(shared);
            let by_key = self.by_key.drain().map(|(k, g)| (k, (id, g)));
            self.earlier_by_key.extend(by_key);
            let patchable =
                |(id, _): &mut (u64, Arc<Generated>)| state.changed_since(*id).is_some();
            self.earlier_shared.retain(|_, e| patchable(e));
            self.earlier_by_key.retain(|_, e| patchable(e));
        } else {
            self.shared.clear();
            self.by_key.clear();
            self.earlier_shared.clear();
            self.earlier_by_key.clear();
        }
        self.state = Arc::downgrade(state);
        self.state_id = state.id;
        false
    }
}

/// What was generated for an earlier state, with what changed since, if only endpoints
/// and VirtualServices did.
fn patchable(
    state: &MeshState,
    earlier: Option<(u64, Arc<Generated>)>,
) -> Option<(&PatchableChange, Arc<Generated>)> {
    let (id, generated) = earlier?;
    Some((state.changed_since(id)?, generated))
}

/// `before` (a shared part) after `change`: the changed hosts' clusters and endpoints,
/// and after a VirtualService change the routes (an on-demand sidecar's: the virtual
/// hosts of the changed VirtualServices' hosts), translated again.
fn patch(
    before: &Generated,
    change: &PatchableChange,
    snapshot: &Snapshot,
    proxy: &Proxy,
) -> Generated {
    let mut patched = before.clone();
    let hosts = &change.endpoints_of;
    if !hosts.is_empty() {
        let fresh = fleetmesh_xds::generate_shared_hosts(snapshot, proxy, hosts);
        patched = patched.with_hosts_replaced(hosts, fresh);
    }
    if change.virtual_services && proxy.on_demand && !change.direct_bodies {
        // Each virtual host is a resource of its own: only the changed hosts' routes.
        let fresh = match patched.of_type(fleetmesh_xds::ResourceType::VirtualHost) {
            Some(held) => fleetmesh_xds::patch_virtual_host_routes(
                snapshot,
                proxy,
                &change.routes_of,
                held.iter().map(|(name, _)| name.as_str()),
                |name| Some(held.get(name)?.resource()),
            ),
            None => Vec::new(),
        };
        patched = patched.with_virtual_hosts(fresh);
    } else if change.virtual_services {
        patched = patched.with_routes(fleetmesh_xds::generate_shared_routes(snapshot, proxy));
    }
    patched
}

impl GenerationCache {
    pub fn get(&self, state: &Arc<MeshState>, proxy: &Proxy) -> Arc<Generated> {
        let key = proxy.config_key();
        let earlier = {
            let mut entries = self.inner.lock();
            if entries.current(state)
                && let Some(found) = entries.by_key.get(&key)
            {
                return found.clone();
            }
            entries.earlier_by_key.get(&key).cloned()
        };
        // A miss: generate outside the lock, so proxies with other keys need not wait.
        let shared_key = SharedKey::new(&state.snapshot, proxy);
        let (found, earlier_shared) = {
            let mut entries = self.inner.lock();
            entries.current(state);
            (
                entries.shared.get(&shared_key).cloned(),
                entries.earlier_shared.get(&shared_key).cloned(),
            )
        };
        let shared = found.unwrap_or_else(|| {
            let snapshot = &state.snapshot;
            let generated = match patchable(state, earlier_shared) {
                Some((change, before)) => patch(&before, change, snapshot, proxy),
                None => Generated::new(fleetmesh_xds::generate_shared(snapshot, proxy)),
            };
            self.keep(state, |e| &mut e.shared, shared_key, generated)
        });
        // A proxy's own part does not depend on endpoints: after an endpoint change, its
        // earlier one is composed with the new shared part. A gateway's routes are its
        // own, so after a VirtualService change it is generated again; a sidecar's only
        // when the change was to `tcp` or `tls` routes (its captured outbound listener).
        let own = |state: &MeshState| fleetmesh_xds::generate_own(&state.snapshot, proxy);
        let composed = patchable(state, earlier)
            .and_then(|(change, before)| {
                let own_changed = match proxy.kind {
                    ProxyKind::Router => change.virtual_services,
                    ProxyKind::Sidecar => change.stream_routes,
                };
                let again = own_changed.then(|| own(state));
                before.recompose(&shared, again)
            })
            .unwrap_or_else(|| Generated::compose(&shared, own(state)));
        self.keep(state, |e| &mut e.by_key, key, composed)
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
        let mut entries = self.inner.lock();
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
    use fleetmesh_xds::ResourceType;
    use fleetmesh_xds::{Interception, ProxyKind};

    fn proxy(pod: &str, namespace: &str) -> Proxy {
        Proxy {
            id: format!("sidecar~10.0.0.1~{pod}.{namespace}~{namespace}.svc.cluster.local"),
            kind: ProxyKind::Sidecar,
            ips: vec!["10.0.0.1".into()],
            pod_name: pod.into(),
            namespace: namespace.into(),
            labels: [("app".to_string(), "reviews".to_string())].into(),
            service_account: "reviews".into(),
            istio_version: "1.28.0".into(),
            cluster_id: "c1".into(),
            mesh_id: "m".into(),
            interception: Interception::Redirect,
            on_demand: false,
            dns_capture: false,
            locality: None,
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
        let cache = GenerationCache::default();
        let state = Arc::new(MeshState::new(Snapshot::default()));
        let reviews = proxy("reviews-1", "shop");
        let mut ratings = proxy("ratings-1", "shop");
        ratings.labels = [("app".to_string(), "ratings".to_string())].into();
        let a = cache.get(&state, &reviews);
        let b = cache.get(&state, &ratings);
        assert!(!Arc::ptr_eq(&a, &b), "other labels, other own part");
        for shared in [ResourceType::Endpoint, ResourceType::Route] {
            assert!(
                Arc::ptr_eq(a.of_type(shared).unwrap(), b.of_type(shared).unwrap()),
                "{shared:?} is one copy"
            );
        }
        for p in [&reviews, &ratings] {
            let whole = Generated::new(fleetmesh_xds::generate(&state.snapshot, p));
            assert_eq!(*cache.get(&state, p), whole, "shared + own = the whole");
            assert_eq!(
                cache
                    .get(&state, p)
                    .of_type(ResourceType::Cluster)
                    .unwrap()
                    .len(),
                whole.of_type(ResourceType::Cluster).unwrap().len()
            );
        }
    }

    const MESH: &str = "\
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: shop}
spec: {selector: {app: ratings}, ports: [{name: http, port: 9080}]}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v1, namespace: shop}
spec: {address: 127.10.0.2, labels: {app: reviews, version: v1}, serviceAccount: reviews}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: ratings-v1, namespace: shop}
spec: {address: 127.10.0.3, labels: {app: ratings, version: v1}, serviceAccount: ratings}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
";

    fn mesh() -> Snapshot {
        let loaded = fleetmesh_api::load_documents(None, MESH).unwrap();
        Snapshot::of_config(loaded.iter().map(|l| &l.resource).collect())
    }

    /// `snapshot` with one more endpoint of reviews, version `version`, running as `account`.
    fn scaled(snapshot: &Snapshot, address: &str, version: &str, account: &str) -> Snapshot {
        let mut next = snapshot.clone();
        let reviews = next
            .services
            .get_mut("reviews.shop.svc.cluster.local")
            .unwrap();
        let mut endpoint = reviews.endpoints[0].clone();
        endpoint.address = address.into();
        endpoint.labels.insert("version".into(), version.into());
        endpoint.service_account = Some(account.into());
        Arc::make_mut(reviews).endpoints.push(endpoint);
        next
    }

    #[test]
    fn an_endpoint_change_is_patched_into_what_was_generated() {
        let cache = GenerationCache::default();
        let proxies = [proxy("reviews-1", "shop"), proxy("web-1", "front")];
        let first = Arc::new(MeshState::new(mesh()));
        let before: Vec<_> = proxies.iter().map(|p| cache.get(&first, p)).collect();

        // A second pod of the same account: only reviews' endpoints change.
        let second = Arc::new(
            first
                .next(scaled(&first.snapshot, "127.10.0.4", "v2", "reviews"))
                .unwrap(),
        );
        // And a third of another account: reviews' clusters name a new identity too.
        let third = Arc::new(
            second
                .next(scaled(
                    &second.snapshot,
                    "127.10.0.5",
                    "v2",
                    "reviews-canary",
                ))
                .unwrap(),
        );
        let patched: Vec<_> = proxies.iter().map(|p| cache.get(&second, p)).collect();
        for ((proxy, before), patched) in proxies.iter().zip(&before).zip(&patched) {
            let whole = Generated::new(fleetmesh_xds::generate(&second.snapshot, proxy));
            assert_eq!(**patched, whole, "patched = generated anew");
            assert_ne!(**patched, **before, "the new endpoint is there");
            for unchanged in [ResourceType::Cluster, ResourceType::Listener] {
                assert!(
                    Arc::ptr_eq(
                        patched.of_type(unchanged).unwrap(),
                        before.of_type(unchanged).unwrap()
                    ),
                    "{unchanged:?} is kept as it was"
                );
            }
        }
        for (proxy, patched) in proxies.iter().zip(&patched) {
            let after = cache.get(&third, proxy);
            let whole = Generated::new(fleetmesh_xds::generate(&third.snapshot, proxy));
            assert_eq!(*after, whole, "patched = generated anew");
            assert_ne!(
                after.of_type(ResourceType::Cluster).unwrap().version,
                patched.of_type(ResourceType::Cluster).unwrap().version,
                "a new identity behind reviews changes its clusters"
            );
            assert_ne!(
                after.of_type(ResourceType::Endpoint).unwrap().version,
                patched.of_type(ResourceType::Endpoint).unwrap().version
            );
        }
    }

    #[test]
    fn a_state_that_skipped_one_is_patched_with_both_changes() {
        let cache = GenerationCache::default();
        let reviews = proxy("reviews-1", "shop");
        let first = Arc::new(MeshState::new(mesh()));
        let before = cache.get(&first, &reviews);
        let second = first
            .next(scaled(&first.snapshot, "127.10.0.4", "v2", "reviews"))
            .unwrap();
        // No proxy asked for the second state before the third came.
        let third = Arc::new(
            second
                .next(scaled(&second.snapshot, "127.10.0.5", "v1", "reviews"))
                .unwrap(),
        );
        let whole = Generated::new(fleetmesh_xds::generate(&third.snapshot, &reviews));
        let patched = cache.get(&third, &reviews);
        assert_eq!(*patched, whole);
        let listeners = |g: &Generated| g.of_type(ResourceType::Listener).unwrap().clone();
        assert!(
            Arc::ptr_eq(&listeners(&patched), &listeners(&before)),
            "patched, not generated anew"
        );
    }

    #[test]
    fn a_virtual_service_change_regenerates_routes_alone() {
        let cache = GenerationCache::default();
        let reviews = proxy("reviews-1", "shop");
        let mut gateway = proxy("gateway-1", "shop");
        gateway.kind = fleetmesh_xds::ProxyKind::Router;
        let first = Arc::new(MeshState::new(mesh()));
        let before = cache.get(&first, &reviews);
        cache.get(&first, &gateway);
        let second = with_virtual_services(
            &first,
            "spec: {hosts: [reviews], http: [{route: [{destination: {host: reviews, subset: v1}}]}]}",
        );
        let patched = cache.get(&second, &reviews);
        let whole = Generated::new(fleetmesh_xds::generate(&second.snapshot, &reviews));
        assert_eq!(*patched, whole, "patched = generated anew");
        // HTTP routes are all in the shared route configs: the sidecar's listeners stay.
        for kept in [
            ResourceType::Cluster,
            ResourceType::Endpoint,
            ResourceType::Listener,
        ] {
            assert!(
                Arc::ptr_eq(
                    patched.of_type(kept).unwrap(),
                    before.of_type(kept).unwrap()
                ),
                "{kept:?} is kept as it was"
            );
        }
        assert_ne!(
            patched.of_type(ResourceType::Route).unwrap().version,
            before.of_type(ResourceType::Route).unwrap().version
        );
        let whole = Generated::new(fleetmesh_xds::generate(&second.snapshot, &gateway));
        assert_eq!(*cache.get(&second, &gateway), whole, "a gateway's too");
    }

    #[test]
    fn an_on_demand_sidecars_virtual_service_change_replaces_its_hosts_virtual_hosts_alone() {
        let cache = GenerationCache::default();
        let mut sidecar = proxy("reviews-1", "shop");
        sidecar.on_demand = true;
        let first = Arc::new(MeshState::new(mesh()));
        let before = cache.get(&first, &sidecar);
        let by_name = |g: &Generated| -> std::collections::BTreeMap<String, String> {
            let set = g.of_type(ResourceType::VirtualHost).unwrap();
            set.iter()
                .map(|(name, entry)| (name.clone(), entry.hash.clone()))
                .collect()
        };
        let changes = [
            "spec: {hosts: [reviews], http: [{route: [{destination: {host: reviews, subset: v1}}]}]}",
            // Answering with a body reaches the route configs: they are made again too.
            "spec: {hosts: [reviews], http: [{directResponse: {status: 503, body: {string: down}}}]}",
            "spec: {hosts: ['*.shop.svc.cluster.local'], http: [{route: [{destination: {host: ratings}}]}]}",
        ];
        let mut earlier = before.clone();
        let mut state = first;
        for spec in changes {
            state = with_virtual_services(&state, spec);
            let patched = cache.get(&state, &sidecar);
            let whole = Generated::new(fleetmesh_xds::generate(&state.snapshot, &sidecar));
            assert_eq!(*patched, whole, "patched = generated anew, after {spec}");
            assert_eq!(by_name(&patched), by_name(&whole), "after {spec}");
            earlier = patched;
        }
        let changed: Vec<String> = by_name(&earlier)
            .into_iter()
            .filter(|(name, hash)| by_name(&before).get(name) != Some(hash))
            .map(|(name, _)| name)
            .collect();
        assert_eq!(
            changed,
            [
                "9080/ratings.shop.svc.cluster.local:9080",
                "9080/reviews.shop.svc.cluster.local:9080"
            ],
            "the wildcard reached both services, the unknown hosts' one stayed"
        );
    }

    /// `state`'s snapshot with one VirtualService `reviews` of this `spec` line (YAML).
    fn with_virtual_services(state: &Arc<MeshState>, spec: &str) -> Arc<MeshState> {
        let routed = format!(
            "{MESH}---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n\
             metadata: {{name: reviews, namespace: shop}}\n{spec}\n"
        );
        let loaded = fleetmesh_api::load_documents(None, &routed).unwrap();
        let mut next = (*state.snapshot).clone();
        next.virtual_services =
            Snapshot::of_config(loaded.iter().map(|l| &l.resource).collect()).virtual_services;
        Arc::new(state.next(next).unwrap())
    }

    #[test]
    fn a_tcp_route_change_regenerates_a_sidecars_own_listeners() {
        let cache = GenerationCache::default();
        let reviews = proxy("reviews-1", "shop");
        let mesh = format!(
            "{MESH}---\napiVersion: v1\nkind: Service\nmetadata: {{name: db, namespace: shop}}\n\
             spec: {{clusterIP: 10.96.0.10, selector: {{app: db}}, ports: [{{name: tcp, port: 5432}}]}}\n"
        );
        let loaded = fleetmesh_api::load_documents(None, &mesh).unwrap();
        let first = Arc::new(MeshState::new(Snapshot::of_config(
            loaded.iter().map(|l| &l.resource).collect(),
        )));
        let before = cache.get(&first, &reviews);
        let second = with_virtual_services(
            &first,
            "spec: {hosts: [db], tcp: [{route: [{destination: {host: ratings, port: {number: 9080}}}]}]}",
        );
        let patched = cache.get(&second, &reviews);
        let whole = Generated::new(fleetmesh_xds::generate(&second.snapshot, &reviews));
        assert_eq!(*patched, whole, "patched = generated anew");
        assert_ne!(
            patched.of_type(ResourceType::Listener).unwrap().version,
            before.of_type(ResourceType::Listener).unwrap().version,
            "the captured listener forwards db to ratings now"
        );
    }

    #[test]
    fn an_unchanged_mesh_is_no_new_state() {
        let first = MeshState::new(mesh());
        assert!(first.next(mesh()).is_none());
    }
}
