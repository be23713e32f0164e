//! Gateway servers that forward connections as they are, with a TCP proxy: a PASSTHROUGH
//! server's stay encrypted and go, chosen by the SNI name the client sent, to the
//! destination of a bound VirtualService's `tls` route (a filter chain per name); a TCP
//! server's go to the destination of the first bound `tcp` route for its port.

use crate::pack;
use crate::route::action::cluster_name;
use crate::scope::{GatewayServer, Scope, binds};
use crate::telemetry;
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, FilterChainMatch, filter};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use fleetmesh_api::networking::{RouteDestination, TcpRoute, VirtualServiceSpec};
use fleetmesh_api::resource::Config;
use fleetmesh_model::host::host_matches;
use std::collections::BTreeSet;

/// One port's servers that forward.
#[derive(Default)]
pub struct Servers {
    pub passthrough: Vec<GatewayServer>,
    pub tcp: Vec<GatewayServer>,
}

/// The filter chains of one port's forwarding servers: by SNI for PASSTHROUGH, then one
/// for everything else when a TCP server has a route (`http`: the port also serves
/// HTTP, which takes what no SNI matched instead).
pub fn chains(scope: &Scope, port: u32, servers: &Servers, http: bool) -> Vec<FilterChain> {
    let mut chains = passthrough(scope, port, &servers.passthrough);
    if !http && let Some(tcp) = tcp(scope, port, &servers.tcp) {
        chains.push(tcp);
    }
    chains
}

/// One chain per SNI name that a `tls` route of a VirtualService bound to a server's
/// gateway matches and the server accepts. The first route to name an SNI wins
/// (VirtualServices in namespace/name order, routes in order), as in Istio.
fn passthrough(scope: &Scope, port: u32, servers: &[GatewayServer]) -> Vec<FilterChain> {
    let mut taken = BTreeSet::new();
    let mut chains = Vec::new();
    for server in servers {
        let gateway = &server.gateway;
        for vs in scope.virtual_services(gateway) {
            let namespace = &vs.metadata.namespace;
            for route in vs.spec.tls.iter().filter(|r| !r.route.is_empty()) {
                let names = route
                    .matches
                    .iter()
                    .filter(|m| applies(m.port, &m.gateways, namespace, gateway, port))
                    .flat_map(|m| &m.sni_hosts)
                    .filter(|sni| server.accepts(sni));
                for sni in names {
                    if taken.insert(sni.clone()) {
                        let stat_prefix = format!("forward|{port}|{sni}");
                        let proxy = tcp_proxy(scope, &route.route, namespace, port, stat_prefix);
                        chains.push(sni_chain(sni, proxy));
                    }
                }
            }
        }
    }
    chains
}

/// A filter chain for TLS connections whose SNI is `sni` (`*`: any, `*.example.com`: a
/// name under it), forwarded by `proxy` as they are.
pub fn sni_chain(sni: &str, proxy: Filter) -> FilterChain {
    FilterChain {
        name: format!("passthrough|{sni}"),
        filter_chain_match: Some(FilterChainMatch {
            server_names: if sni == "*" {
                Vec::new()
            } else {
                vec![sni.to_string()]
            },
            transport_protocol: "tls".into(),
            ..FilterChainMatch::default()
        }),
        filters: vec![proxy],
        ..FilterChain::default()
    }
}

/// The first `tcp` route, of a VirtualService bound to a server's gateway and naming a
/// host the server accepts, whose match (if any) names this port and gateway.
fn tcp(scope: &Scope, port: u32, servers: &[GatewayServer]) -> Option<FilterChain> {
    for server in servers {
        let gateway = &server.gateway;
        for vs in scope.virtual_services(gateway) {
            let namespace = &vs.metadata.namespace;
            let accepted = scope.vs_hosts(vs).iter().any(|host| server.accepts(host));
            if !accepted {
                continue;
            }
            if let Some(route) = first_tcp_route(vs, gateway, port) {
                return Some(FilterChain {
                    name: format!("tcp|{port}"),
                    filters: vec![tcp_proxy(
                        scope,
                        &route.route,
                        namespace,
                        port,
                        format!("forward|{port}|tcp"),
                    )],
                    ..FilterChain::default()
                });
            }
        }
    }
    None
}

/// A match's port and gateways, when given, must name this server.
pub fn applies(
    match_port: Option<u32>,
    gateways: &[String],
    namespace: &str,
    gateway: &str,
    port: u32,
) -> bool {
    match_port.is_none_or(|p| p == port)
        && (gateways.is_empty() || binds(gateways, namespace, gateway))
}

/// The first `tcp` route of a VirtualService bound to the mesh (sidecars) for `host` whose
/// match (if any) names `port`, with the VirtualService's namespace.
pub fn mesh_tcp_route<'a>(
    scope: &Scope<'a>,
    host: &str,
    port: u32,
) -> Option<(&'a [RouteDestination], &'a str)> {
    scope
        .virtual_services("mesh")
        .filter(|vs| scope.vs_hosts(vs).iter().any(|h| host_matches(h, host)))
        .find_map(|vs| {
            let route = first_tcp_route(vs, "mesh", port)?;
            Some((route.route.as_slice(), vs.metadata.namespace.as_str()))
        })
}

/// The first `tcp` route of `vs` with destinations whose match (if any) names `port`
/// and `gateway` (`mesh` for sidecars).
fn first_tcp_route<'a>(
    vs: &'a Config<VirtualServiceSpec>,
    gateway: &str,
    port: u32,
) -> Option<&'a TcpRoute> {
    let namespace = &vs.metadata.namespace;
    vs.spec.tcp.iter().find(|r| {
        !r.route.is_empty()
            && (r.matches.is_empty()
                || r.matches
                    .iter()
                    .any(|m| applies(m.port, &m.gateways, namespace, gateway, port)))
    })
}

/// A TCP proxy to the route's destinations (weighted when several).
pub fn tcp_proxy(
    scope: &Scope,
    destinations: &[RouteDestination],
    namespace: &str,
    port: u32,
    stat_prefix: String,
) -> Filter {
    let cluster = |d: &RouteDestination| cluster_name(scope, &d.destination, namespace, port);
    let cluster_specifier = match destinations {
        [only] => tcp_proxy::ClusterSpecifier::Cluster(cluster(only)),
        several => tcp_proxy::ClusterSpecifier::WeightedClusters(tcp_proxy::WeightedCluster {
            clusters: several
                .iter()
                // Validation keeps weights and their sum within 32 bits; Istio drops
                // zero weights.
                .filter(|d| d.weight.unwrap_or(0) > 0)
                .map(|d| tcp_proxy::weighted_cluster::ClusterWeight {
                    name: cluster(d),
                    weight: d.weight.unwrap_or(0) as u32,
                    ..Default::default()
                })
                .collect(),
        }),
    };
    let proxy = TcpProxy {
        stat_prefix,
        cluster_specifier: Some(cluster_specifier),
        ..telemetry::tcp_proxy(telemetry::kept(scope, telemetry::Side::Outbound))
    };
    Filter {
        name: "envoy.filters.network.tcp_proxy".into(),
        config_type: Some(filter::ConfigType::TypedConfig(pack(proxy))),
    }
}
