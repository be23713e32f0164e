//! The sidecar layout with iptables capture, as istiod lays it out: `virtualOutbound`
//! (15001) hands each connection to the listener of its original destination port
//! (`0.0.0.0_PORT`, route config named by the port; by SNI name for TLS ports of services
//! without a virtual IP, in `sni`; by address range for ServiceEntries' CIDR `addresses`)
//! or passes it through;
//! `virtualInbound` (15006) picks a filter chain by original destination port and sends
//! it to the app; a port no service declares passes through to the app as TCP, under the
//! workload's mTLS mode and AuthorizationPolicies (never a way around them).

use super::{
    OUTBOUND_PORT, forward, http_listener, inbound_chains, inbound_mtls, inbound_ports,
    inbound_tcp, mtls_chains, outbound_hcm, sni, tcp_proxy, tls_inspector,
};
use crate::names;
use crate::pack;
use crate::scope::Scope;
use crate::telemetry::{self, Side};
use envoy_types::pb::envoy::config::core::v3::{CidrRange, TrafficDirection};
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter, listener_filter,
};
use envoy_types::pb::envoy::extensions::filters::listener::original_dst::v3::OriginalDst;
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};
use fleetmesh_api::security::MtlsMode;
use fleetmesh_model::Service;
use fleetmesh_model::service::ServicePort;
use std::collections::{BTreeMap, BTreeSet};

pub const INBOUND_PORT: u32 = 15006;

pub fn sidecar(scope: &Scope) -> Vec<Listener> {
    let mut listeners = vec![virtual_outbound(scope)];
    let mut by_sni = sni::chains_by_port(scope);
    let mut by_range = range_chains(scope);
    for port in scope.http_ports() {
        let manager = outbound_hcm(
            scope,
            &format!("outbound_0.0.0.0_{port}"),
            &port.to_string(),
        );
        let mut listener = http_listener(
            &names::bound_listener("0.0.0.0", port),
            "0.0.0.0",
            port,
            manager,
        );
        // Reached through virtualOutbound's hand-off, never bound itself.
        listener.bind_to_port = Some(BoolValue { value: false });
        listener.traffic_direction = TrafficDirection::Outbound as i32;
        // TLS for names of this port's TLS services, TCP for its address ranges; the rest
        // is HTTP.
        let chains: Vec<FilterChain> = [by_range.remove(&port), by_sni.remove(&port)]
            .into_iter()
            .flatten()
            .flatten()
            .collect();
        if chains.iter().any(matches_server_names) {
            listener.listener_filters.push(tls_inspector());
        }
        listener.filter_chains.splice(0..0, chains);
        listeners.push(listener);
    }
    for (port, chains) in by_sni {
        by_range.entry(port).or_default().extend(chains);
    }
    listeners.extend(
        by_range
            .into_iter()
            .map(|(port, chains)| outbound_port(port, chains, scope)),
    );
    listeners.extend(tcp_service_listeners(scope));
    listeners.push(virtual_inbound(scope));
    listeners
}

fn virtual_outbound(scope: &Scope) -> Listener {
    Listener {
        name: names::VIRTUAL_OUTBOUND.into(),
        address: Some(crate::common::socket_address("0.0.0.0", OUTBOUND_PORT)),
        use_original_dst: Some(BoolValue { value: true }),
        default_filter_chain: Some(fallthrough(scope)),
        traffic_direction: TrafficDirection::Outbound as i32,
        ..Listener::default()
    }
}

/// Where a connection to a destination the mesh does not know goes: on as it is
/// (ALLOW_ANY, Istio's default) or nowhere (REGISTRY_ONLY).
fn fallthrough(scope: &Scope) -> FilterChain {
    let side = telemetry::kept(scope, Side::Outbound);
    if scope.registry_only() {
        tcp_chain("BlackHoleFilterChain", names::BLACK_HOLE_CLUSTER, side)
    } else {
        tcp_chain("PassthroughFilterChain", names::PASSTHROUGH_CLUSTER, side)
    }
}

/// `0.0.0.0_PORT` for a port without an HTTP service on it: the SNI name (see `sni`) or
/// the destination's address range picks the chain; other connections fall through.
fn outbound_port(port: u32, chains: Vec<FilterChain>, scope: &Scope) -> Listener {
    let listener_filters = if chains.iter().any(matches_server_names) {
        vec![tls_inspector()]
    } else {
        Vec::new()
    };
    Listener {
        name: names::bound_listener("0.0.0.0", port),
        address: Some(crate::common::socket_address("0.0.0.0", port)),
        listener_filters,
        filter_chains: chains,
        default_filter_chain: Some(fallthrough(scope)),
        // Reached through virtualOutbound's hand-off, never bound itself.
        bind_to_port: Some(BoolValue { value: false }),
        traffic_direction: TrafficDirection::Outbound as i32,
        ..Listener::default()
    }
}

/// Whether `chain` is chosen by SNI name (its listener then needs the TLS inspector).
fn matches_server_names(chain: &FilterChain) -> bool {
    chain
        .filter_chain_match
        .as_ref()
        .is_some_and(|m| !m.server_names.is_empty())
}

fn virtual_inbound(scope: &Scope) -> Listener {
    let mtls = inbound_mtls(scope);
    let ports = inbound_ports(scope);
    let mut listener_filters = vec![ListenerFilter {
        name: "envoy.filters.listener.original_dst".into(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(pack(
            OriginalDst::default(),
        ))),
        ..ListenerFilter::default()
    }];
    if mtls.default == MtlsMode::Permissive
        || ports
            .iter()
            .any(|port| mtls.mode(port.number) == MtlsMode::Permissive)
    {
        listener_filters.push(tls_inspector());
    }
    let mut filter_chains = Vec::new();
    for port in &ports {
        let by_port = FilterChainMatch {
            destination_port: crate::common::u32_value(port.number),
            ..Default::default()
        };
        filter_chains.extend(inbound_chains(scope, port, mtls.mode(port.number), by_port));
    }
    // Chains without a destination port match only ports that no chain above names.
    let passthrough = |side| inbound_tcp(scope, names::INBOUND_PASSTHROUGH_CLUSTER, side);
    filter_chains.extend(mtls_chains(
        scope,
        "InboundPassthroughFilterChain",
        passthrough,
        mtls.default,
        FilterChainMatch::default(),
    ));
    Listener {
        name: names::VIRTUAL_INBOUND.into(),
        address: Some(crate::common::socket_address("0.0.0.0", INBOUND_PORT)),
        listener_filters,
        filter_chains,
        traffic_direction: TrafficDirection::Inbound as i32,
        ..Listener::default()
    }
}

fn tcp_chain(name: &str, cluster: &str, side: Option<Side>) -> FilterChain {
    FilterChain {
        name: name.into(),
        filters: vec![tcp_proxy(cluster, side)],
        ..FilterChain::default()
    }
}

/// One listener per virtual IP and port of each visible service's TCP ports
/// (`10.96.0.15_9090`, as istiod names them): TCP carries no host name, so the address a
/// client dialled is what names the service. virtualOutbound hands a connection to the
/// listener of its exact destination before the `0.0.0.0_PORT` one. A mesh
/// VirtualService's `tcp` route for the service decides where it goes, else the service
/// itself. Services without a virtual IP (headless) pass through, but for TLS (`sni`).
fn tcp_service_listeners(scope: &Scope) -> Vec<Listener> {
    let mut listeners = BTreeMap::new();
    // Without a virtual IP (headless) nothing names the service: no listener.
    for service in scope.services.iter().filter(|s| !s.addresses.is_empty()) {
        for port in service.ports.iter().filter(|p| !p.protocol.is_http()) {
            let chains = service_port_chains(scope, service, port);
            let template = if chains.iter().any(matches_server_names) {
                Listener {
                    listener_filters: vec![tls_inspector()],
                    filter_chains: chains,
                    default_filter_chain: Some(fallthrough(scope)),
                    ..Listener::default()
                }
            } else {
                Listener {
                    filter_chains: chains,
                    ..Listener::default()
                }
            };
            for address in &service.addresses {
                let ip = address.to_string();
                let name = names::bound_listener(&ip, port.port);
                // Two services on one address and port: the first (by host name) keeps it.
                listeners.entry(name.clone()).or_insert_with(|| Listener {
                    name,
                    address: Some(crate::common::socket_address(&ip, port.port)),
                    // Reached through virtualOutbound's hand-off, never bound itself.
                    bind_to_port: Some(BoolValue { value: false }),
                    traffic_direction: TrafficDirection::Outbound as i32,
                    ..template.clone()
                });
            }
        }
    }
    listeners.into_values().collect()
}

/// The chains of a service's non-HTTP port: by SNI name where a mesh VirtualService's
/// `tls` routes name the service's host, else one TCP proxy (see [`tcp_service_proxy`]).
fn service_port_chains(scope: &Scope, service: &Service, port: &ServicePort) -> Vec<FilterChain> {
    port.protocol
        .is_tls()
        .then(|| sni::route_chains(scope, &service.hostname, port.port, &mut BTreeSet::new()))
        .flatten()
        .unwrap_or_else(|| {
            vec![FilterChain {
                filters: vec![tcp_service_proxy(scope, &service.hostname, port.port)],
                ..FilterChain::default()
            }]
        })
}

/// Chains for the address ranges of visible services' non-HTTP ports (a ServiceEntry's
/// `addresses: [10.8.0.0/16]`), by port, for the `0.0.0.0_PORT` listeners: a connection
/// to any address in a range is the service's (a virtual IP in it still goes to its own
/// listener, which virtualOutbound picks first). A range claimed twice on one port is
/// the first service's (by host name), as Envoy takes each match once.
fn range_chains(scope: &Scope) -> BTreeMap<u32, Vec<FilterChain>> {
    let mut by_port: BTreeMap<u32, Vec<FilterChain>> = BTreeMap::new();
    let mut claimed = BTreeSet::new();
    for service in scope
        .services
        .iter()
        .filter(|s| !s.address_ranges.is_empty())
    {
        for port in service.ports.iter().filter(|p| !p.protocol.is_http()) {
            let ranges: Vec<CidrRange> = service
                .address_ranges
                .iter()
                .filter(|range| claimed.insert((port.port, **range)))
                .map(|range| CidrRange {
                    address_prefix: range.address.to_string(),
                    prefix_len: Some(UInt32Value {
                        value: range.prefix_len,
                    }),
                })
                .collect();
            if ranges.is_empty() {
                continue;
            }
            let chains = service_port_chains(scope, service, port)
                .into_iter()
                .map(|mut chain| {
                    let matching = chain.filter_chain_match.get_or_insert_default();
                    matching.prefix_ranges = ranges.clone();
                    chain.name = format!("{}_{}", service.hostname, port.port);
                    chain
                });
            by_port.entry(port.port).or_default().extend(chains);
        }
    }
    by_port
}

/// A TCP proxy for `host`'s `port`: where a mesh VirtualService's `tcp` route sends it,
/// else to the service.
fn tcp_service_proxy(scope: &Scope, host: &str, port: u32) -> Filter {
    let cluster = names::outbound_cluster(port, "", host);
    match forward::mesh_tcp_route(scope, host, port) {
        Some((destinations, namespace)) => {
            forward::tcp_proxy(scope, destinations, namespace, port, cluster)
        }
        None => tcp_proxy(&cluster, telemetry::kept(scope, Side::Outbound)),
    }
}
