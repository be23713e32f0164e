//! What changed between two snapshots, as far as translation cares. Most changes in a
//! busy cluster are endpoints (pods scaled, restarted, becoming ready), and most edits
//! are VirtualServices; knowing that only those changed lets the xDS server patch what it
//! generated before instead of translating the whole mesh again, and an unchanged mesh
//! needs no push.

use crate::host::resolve_host;
use crate::service::Service;
use crate::snapshot::Snapshot;
use fleetmesh_api::networking::VirtualServiceSpec;
use fleetmesh_api::resource::Config;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// What changed between two snapshots, as far as proxies can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Nothing a proxy could see.
    None,
    /// Only these, and the known workloads (what proxies are matched against).
    Patchable(PatchableChange),
    /// Anything else.
    Other,
}

/// A change what was generated before can be patched for: only endpoints of some hosts
/// and VirtualServices.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatchableChange {
    /// The hosts whose endpoints changed.
    pub endpoints_of: BTreeSet<String>,
    /// Whether any VirtualService changed.
    pub virtual_services: bool,
    /// Whether a changed VirtualService (as it was or as it is) has `tcp` or `tls` routes:
    /// only those reach a sidecar's own listeners (the captured outbound one); `http`
    /// routes are in the shared route configs.
    pub stream_routes: bool,
    /// The hosts of the changed VirtualServices (as they were and as they are, resolved
    /// in their namespaces; patterns such as `*.example.com` included): only the routes
    /// of services these match can differ.
    pub routes_of: BTreeSet<String>,
    /// Whether a changed VirtualService answers some request itself with a body: that
    /// reaches the route configs' own settings (their direct-response body limit), not
    /// only the routes of its hosts.
    pub direct_bodies: bool,
}

impl PatchableChange {
    /// This change, then `later`.
    pub fn then(&self, later: &PatchableChange) -> PatchableChange {
        PatchableChange {
            endpoints_of: self
                .endpoints_of
                .union(&later.endpoints_of)
                .cloned()
                .collect(),
            virtual_services: self.virtual_services || later.virtual_services,
            stream_routes: self.stream_routes || later.stream_routes,
            routes_of: self.routes_of.union(&later.routes_of).cloned().collect(),
            direct_bodies: self.direct_bodies || later.direct_bodies,
        }
    }
}

impl Snapshot {
    /// How `self` differs from `older`.
    pub fn change_since(&self, older: &Snapshot) -> Change {
        // Destructured, so that a new field cannot be forgotten here.
        let Snapshot {
            domain,
            mesh,
            services,
            virtual_services,
            destination_rules,
            gateways,
            sidecars,
            peer_authentications,
            authorization_policies,
            request_authentications,
            jwks,
            workloads,
            credentials,
            secret_readers,
            // Derived from the services.
            endpoint_localities: _,
        } = self;
        let rest_equal = *domain == older.domain
            && *mesh == older.mesh
            && *destination_rules == older.destination_rules
            && *gateways == older.gateways
            && *sidecars == older.sidecars
            && *peer_authentications == older.peer_authentications
            && *authorization_policies == older.authorization_policies
            && *request_authentications == older.request_authentications
            && *jwks == older.jwks
            && *credentials == older.credentials
            && *secret_readers == older.secret_readers
            && services.len() == older.services.len();
        if !rest_equal {
            return Change::Other;
        }
        let mut hosts = BTreeSet::new();
        for ((host, new), (old_host, old)) in services.iter().zip(&older.services) {
            if host != old_host || !same_but_endpoints(new, old) {
                return Change::Other;
            }
            if new.endpoints != old.endpoints {
                hosts.insert(host.clone());
            }
        }
        let changed = changed_virtual_services(virtual_services, &older.virtual_services);
        let change = PatchableChange {
            endpoints_of: hosts,
            virtual_services: !changed.is_empty(),
            stream_routes: changed
                .iter()
                .any(|vs| !vs.spec.tcp.is_empty() || !vs.spec.tls.is_empty()),
            routes_of: changed
                .iter()
                .flat_map(|vs| {
                    let namespace = &vs.metadata.namespace;
                    vs.spec
                        .hosts
                        .iter()
                        .map(|h| resolve_host(h, namespace, domain))
                })
                .collect(),
            direct_bodies: changed.iter().any(|vs| {
                vs.spec.http.iter().any(|route| {
                    route
                        .direct_response
                        .as_ref()
                        .is_some_and(|d| d.body.is_some())
                })
            }),
        };
        if change == PatchableChange::default() && *workloads == older.workloads {
            Change::None
        } else {
            Change::Patchable(change)
        }
    }
}

/// The VirtualServices in one list and not the same in the other (as they are in each).
fn changed_virtual_services<'a>(
    new: &'a [Arc<Config<VirtualServiceSpec>>],
    old: &'a [Arc<Config<VirtualServiceSpec>>],
) -> Vec<&'a Arc<Config<VirtualServiceSpec>>> {
    type ByName<'a> = HashMap<(&'a str, &'a str), &'a Arc<Config<VirtualServiceSpec>>>;
    let by_name = |list: &'a [Arc<Config<VirtualServiceSpec>>]| -> ByName<'a> {
        list.iter().map(|vs| (key(vs), vs)).collect()
    };
    let (new_by_name, old_by_name) = (by_name(new), by_name(old));
    let mut changed: Vec<_> = new
        .iter()
        .filter(|vs| old_by_name.get(&key(vs)) != Some(vs))
        .collect();
    changed.extend(
        old.iter()
            .filter(|vs| new_by_name.get(&key(vs)) != Some(vs)),
    );
    changed
}

fn key(vs: &Config<VirtualServiceSpec>) -> (&str, &str) {
    (vs.metadata.namespace.as_str(), vs.metadata.name.as_str())
}

fn same_but_endpoints(a: &Service, b: &Service) -> bool {
    let Service {
        hostname,
        namespace,
        addresses,
        address_ranges,
        ports,
        endpoints: _,
        export_to,
        selector,
        resolution,
        mesh_external,
        subject_alt_names,
    } = a;
    *hostname == b.hostname
        && *namespace == b.namespace
        && *addresses == b.addresses
        && *address_ranges == b.address_ranges
        && *ports == b.ports
        && *export_to == b.export_to
        && *selector == b.selector
        && *resolution == b.resolution
        && *mesh_external == b.mesh_external
        && *subject_alt_names == b.subject_alt_names
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::{Endpoint, Workload};
    use std::sync::Arc;

    fn mesh() -> Snapshot {
        let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: reviews, namespace: default}\n\
                    spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}\n---\n\
                    apiVersion: v1\nkind: Service\nmetadata: {name: ratings, namespace: default}\n\
                    spec: {selector: {app: ratings}, ports: [{name: http, port: 9080}]}\n";
        let loaded = fleetmesh_api::load_documents(None, yaml).unwrap();
        Snapshot::of_config(loaded.iter().map(|l| &l.resource).collect())
    }

    fn with_endpoint(snapshot: &Snapshot, host: &str, address: &str) -> Snapshot {
        let mut changed = snapshot.clone();
        let service = changed.services.get_mut(host).unwrap();
        Arc::make_mut(service).endpoints.push(Endpoint {
            address: address.into(),
            ports: [(9080, 9080)].into(),
            labels: Default::default(),
            locality: None,
            weight: 1,
            service_account: None,
            cluster_id: "local".into(),
            workload: None,
        });
        changed
    }

    fn after_yaml(yaml: &str) -> Snapshot {
        let loaded = fleetmesh_api::load_documents(None, yaml).unwrap();
        Snapshot::of_config(loaded.iter().map(|l| &l.resource).collect())
    }

    #[test]
    fn a_virtual_service_edit_is_named() {
        let before = mesh();
        let mut after = before.clone();
        after.virtual_services = after_yaml(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\n\
             metadata: {name: reviews, namespace: default}\n\
             spec: {hosts: [reviews], http: [{route: [{destination: {host: reviews}}]}]}\n",
        )
        .virtual_services;
        assert_eq!(
            after.change_since(&before),
            Change::Patchable(PatchableChange {
                endpoints_of: Default::default(),
                virtual_services: true,
                stream_routes: false,
                routes_of: ["reviews.default.svc.cluster.local".to_string()].into(),
                direct_bodies: false,
            })
        );
    }

    #[test]
    fn a_virtual_service_edit_with_tcp_routes_is_told_apart() {
        let tcp = |port: u32| {
            after_yaml(&format!(
                "apiVersion: networking.istio.io/v1\nkind: VirtualService\n\
                 metadata: {{name: db, namespace: default}}\n\
                 spec: {{hosts: [db], tcp: [{{route: [{{destination: {{host: db, port: {{number: {port}}}}}}}]}}]}}\n"
            ))
            .virtual_services
        };
        let mut before = mesh();
        before.virtual_services = tcp(5432);
        let mut after = before.clone();
        after.virtual_services = tcp(5433);
        let Change::Patchable(edited) = after.change_since(&before) else {
            panic!("a VirtualService edit is patchable");
        };
        assert!(edited.stream_routes);
        // Removing it is a change to stream routes too.
        after.virtual_services.clear();
        let Change::Patchable(removed) = after.change_since(&before) else {
            panic!("a VirtualService removal is patchable");
        };
        assert!(removed.stream_routes);
    }

    #[test]
    fn an_equal_snapshot_is_no_change() {
        assert_eq!(mesh().change_since(&mesh()), Change::None);
    }

    #[test]
    fn endpoints_of_one_host_are_named() {
        let before = mesh();
        let after = with_endpoint(&before, "reviews.default.svc.cluster.local", "10.0.0.9");
        assert_eq!(
            after.change_since(&before),
            Change::Patchable(PatchableChange {
                endpoints_of: ["reviews.default.svc.cluster.local".to_string()].into(),
                ..PatchableChange::default()
            })
        );
    }

    #[test]
    fn a_new_workload_alone_is_an_endpoint_change_of_no_host() {
        let before = mesh();
        let mut after = before.clone();
        after.workloads.insert(
            ("default".into(), "reviews-1".into()),
            Workload {
                namespace: "default".into(),
                name: "reviews-1".into(),
                ip: None,
                labels: Default::default(),
                service_account: None,
            },
        );
        assert_eq!(
            after.change_since(&before),
            Change::Patchable(PatchableChange::default())
        );
    }

    #[test]
    fn a_port_or_config_change_is_other() {
        let before = mesh();
        let mut ports = before.clone();
        let service = ports
            .services
            .get_mut("reviews.default.svc.cluster.local")
            .unwrap();
        Arc::make_mut(service).ports[0].port = 9081;
        assert_eq!(ports.change_since(&before), Change::Other);

        let mut fewer = before.clone();
        fewer.services.remove("ratings.default.svc.cluster.local");
        assert_eq!(fewer.change_since(&before), Change::Other);

        let mut rule = before.clone();
        rule.destination_rules = after_yaml(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
             metadata: {name: reviews, namespace: default}\nspec: {host: reviews}\n",
        )
        .destination_rules;
        assert_eq!(rule.change_since(&before), Change::Other);

        let mut mesh_wide = before.clone();
        mesh_wide.mesh.registry_only = true;
        assert_eq!(mesh_wide.change_since(&before), Change::Other);
    }
}
