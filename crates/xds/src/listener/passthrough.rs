//! TLS passthrough on a gateway: a PASSTHROUGH server's connections stay encrypted and
//! go, chosen by the SNI name the client sent, to the destination of a bound
//! VirtualService's `tls` route (a filter chain per name, with a TCP proxy).

use crate::pack;
use crate::route::action::cluster_name;
use crate::scope::{Scope, binds};
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, FilterChainMatch, filter};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use fleetmesh_api::networking::{RouteDestination, TlsMatchAttributes};
use fleetmesh_model::host::host_matches;
use std::collections::BTreeSet;

/// The filter chains of `port`'s PASSTHROUGH servers, each `(gateway, hosts)`: one per
/// SNI name that a `tls` route of a VirtualService bound to that gateway matches and the
/// server accepts. The first route to name an SNI wins (VirtualServices in
/// namespace/name order, routes in order), as in Istio.
pub fn chains(scope: &Scope, port: u32, servers: &[(String, Vec<String>)]) -> Vec<FilterChain> {
    let mut taken = BTreeSet::new();
    let mut chains = Vec::new();
    for (gateway, server_hosts) in servers {
        for vs in scope.virtual_services(gateway) {
            let namespace = &vs.metadata.namespace;
            for route in vs.spec.tls.iter().filter(|r| !r.route.is_empty()) {
                let names = route
                    .matches
                    .iter()
                    .filter(|m| applies(m, namespace, gateway, port))
                    .flat_map(|m| &m.sni_hosts)
                    .filter(|sni| {
                        server_hosts
                            .iter()
                            .any(|h| host_matches(h, sni) || host_matches(sni, h))
                    });
                for sni in names {
                    if taken.insert(sni.clone()) {
                        chains.push(chain(scope, sni, &route.route, namespace, port));
                    }
                }
            }
        }
    }
    chains
}

/// A match's port and gateways, when given, must name this server.
fn applies(m: &TlsMatchAttributes, namespace: &str, gateway: &str, port: u32) -> bool {
    m.port.is_none_or(|p| p == port)
        && (m.gateways.is_empty() || binds(&m.gateways, namespace, gateway))
}

/// Connections whose SNI is `sni` (any name for `*`) to the route's destinations.
fn chain(
    scope: &Scope,
    sni: &str,
    destinations: &[RouteDestination],
    namespace: &str,
    port: u32,
) -> FilterChain {
    let cluster = |d: &RouteDestination| cluster_name(scope, &d.destination, namespace, port);
    let cluster_specifier = match destinations {
        [only] => tcp_proxy::ClusterSpecifier::Cluster(cluster(only)),
        several => tcp_proxy::ClusterSpecifier::WeightedClusters(tcp_proxy::WeightedCluster {
            clusters: several
                .iter()
                // Validation keeps weights within 0..=100; Istio drops zero weights.
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
        stat_prefix: format!("passthrough|{port}|{sni}"),
        cluster_specifier: Some(cluster_specifier),
        ..TcpProxy::default()
    };
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
        filters: vec![Filter {
            name: "envoy.filters.network.tcp_proxy".into(),
            config_type: Some(filter::ConfigType::TypedConfig(pack(proxy))),
        }],
        ..FilterChain::default()
    }
}
