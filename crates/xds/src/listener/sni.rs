//! A captured sidecar's outbound TLS where no virtual IP names the destination (a TLS or
//! HTTPS port of a ServiceEntry without `addresses`, of a headless Service): the
//! connection's original address says nothing, so the SNI name the client sent picks the
//! filter chain on `0.0.0.0_PORT`, as istiod builds it. A mesh VirtualService's `tls`
//! route for the service decides where a name goes (its `sniHosts`), else the service's
//! own host name goes to the service. Names no chain matches take the fallthrough chain
//! (passed through, or dropped under REGISTRY_ONLY).

use super::forward;
use crate::names;
use crate::scope::Scope;
use crate::telemetry::{self, Side};
use envoy_types::pb::envoy::config::listener::v3::FilterChain;
use fleetmesh_api::networking::{TlsMatchAttributes, TlsRoute};
use fleetmesh_model::host::host_matches;
use fleetmesh_model::service::labels_match;
use std::collections::{BTreeMap, BTreeSet};

/// The SNI filter chains of each port that has some: per TLS port of a visible service
/// without a virtual IP, in host name order. The first chain for a name wins, as in
/// Istio (a name can be claimed by two services, or by a route and a service).
pub fn chains_by_port(scope: &Scope) -> BTreeMap<u32, Vec<FilterChain>> {
    let mut by_port: BTreeMap<u32, (BTreeSet<String>, Vec<FilterChain>)> = BTreeMap::new();
    for service in scope.services.iter().filter(|s| s.addresses.is_empty()) {
        for port in service.ports.iter().filter(|p| p.protocol.is_tls()) {
            let (taken, chains) = by_port.entry(port.port).or_default();
            match route_chains(scope, &service.hostname, port.port, taken) {
                Some(routed) => chains.extend(routed),
                None => {
                    if taken.insert(service.hostname.clone()) {
                        let cluster = names::outbound_cluster(port.port, "", &service.hostname);
                        let side = telemetry::kept(scope, Side::Outbound);
                        let proxy = super::tcp_proxy(&cluster, side);
                        chains.push(forward::sni_chain(&service.hostname, proxy));
                    }
                }
            }
        }
    }
    by_port
        .into_iter()
        .map(|(port, (_, chains))| (port, chains))
        .collect()
}

/// A chain per SNI name of the mesh VirtualServices' `tls` routes for `host` on `port`
/// (names already in `taken` left out), or `None` when no such route applies to this
/// proxy: the host's traffic then goes to the host.
pub fn route_chains(
    scope: &Scope,
    host: &str,
    port: u32,
    taken: &mut BTreeSet<String>,
) -> Option<Vec<FilterChain>> {
    let routed = mesh_tls_routes(scope, host, port);
    if routed.is_empty() {
        return None;
    }
    let chains = routed
        .into_iter()
        .filter(|(sni, _, _)| taken.insert(sni.to_string()))
        .map(|(sni, route, namespace)| {
            let stat_prefix = format!("outbound|{port}|{sni}");
            let proxy = forward::tcp_proxy(scope, &route.route, namespace, port, stat_prefix);
            forward::sni_chain(sni, proxy)
        })
        .collect();
    Some(chains)
}

/// Every (SNI name, route, VirtualService namespace) of the mesh VirtualServices for
/// `host` whose `tls` match applies to this proxy on `port`, in order.
fn mesh_tls_routes<'a>(
    scope: &Scope<'a>,
    host: &str,
    port: u32,
) -> Vec<(&'a str, &'a TlsRoute, &'a str)> {
    let mut routed = Vec::new();
    for vs in scope
        .virtual_services("mesh")
        .filter(|vs| scope.vs_hosts(vs).iter().any(|h| host_matches(h, host)))
    {
        let namespace = vs.metadata.namespace.as_str();
        for route in vs.spec.tls.iter().filter(|r| !r.route.is_empty()) {
            for m in route
                .matches
                .iter()
                .filter(|m| applies(scope, m, namespace, port))
            {
                routed.extend(
                    m.sni_hosts
                        .iter()
                        .map(|sni| (sni.as_str(), route, namespace)),
                );
            }
        }
    }
    routed
}

/// What of a `tls` match can be decided before the connection comes (Istio's static
/// predicates): the port, the gateways (`mesh`), the proxy's labels and namespace.
fn applies(scope: &Scope, m: &TlsMatchAttributes, namespace: &str, port: u32) -> bool {
    forward::applies(m.port, &m.gateways, namespace, "mesh", port)
        && labels_match(&m.source_labels, &scope.proxy.labels)
        && m.source_namespace
            .as_ref()
            .is_none_or(|ns| *ns == scope.proxy.namespace)
}
