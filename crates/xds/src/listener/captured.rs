//! The sidecar layout with iptables capture, as istiod lays it out: `virtualOutbound`
//! (15001) hands each connection to the listener of its original destination port
//! (`0.0.0.0_PORT`, route config named by the port; by SNI name for TLS ports of services
//! without a virtual IP, in `sni`) or passes it through;
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
use envoy_types::pb::envoy::config::core::v3::TrafficDirection;
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter, listener_filter,
};
use envoy_types::pb::envoy::extensions::filters::listener::original_dst::v3::OriginalDst;
use envoy_types::pb::google::protobuf::BoolValue;
use fleetmesh_api::security::MtlsMode;
use std::collections::{BTreeMap, BTreeSet};

pub const INBOUND_PORT: u32 = 15006;

pub fn sidecar(scope: &Scope) -> Vec<Listener> {
    let mut listeners = vec![virtual_outbound(scope)];
    let mut by_sni = sni::chains_by_port(scope);
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
        // TLS for names of this port's TLS services; the rest is HTTP.
        if let Some(chains) = by_sni.remove(&port) {
            listener.listener_filters.push(tls_inspector());
            listener.filter_chains.splice(0..0, chains);
        }
        listeners.push(listener);
    }
    listeners.extend(
        by_sni
            .into_iter()
            .map(|(port, chains)| tls_by_sni(port, chains, scope)),
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

/// `0.0.0.0_PORT` for a TLS port without an HTTP service on it: the SNI name picks the
/// chain (see `sni`), other names fall through.
fn tls_by_sni(port: u32, chains: Vec<FilterChain>, scope: &Scope) -> Listener {
    Listener {
        name: names::bound_listener("0.0.0.0", port),
        address: Some(crate::common::socket_address("0.0.0.0", port)),
        listener_filters: vec![tls_inspector()],
        filter_chains: chains,
        default_filter_chain: Some(fallthrough(scope)),
        // Reached through virtualOutbound's hand-off, never bound itself.
        bind_to_port: Some(BoolValue { value: false }),
        traffic_direction: TrafficDirection::Outbound as i32,
        ..Listener::default()
    }
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
            let routed_by_sni = port
                .protocol
                .is_tls()
                .then(|| {
                    sni::route_chains(scope, &service.hostname, port.port, &mut BTreeSet::new())
                })
                .flatten();
            let template = match routed_by_sni {
                Some(chains) => Listener {
                    listener_filters: vec![tls_inspector()],
                    filter_chains: chains,
                    default_filter_chain: Some(fallthrough(scope)),
                    ..Listener::default()
                },
                None => Listener {
                    filter_chains: vec![FilterChain {
                        filters: vec![tcp_service_proxy(scope, &service.hostname, port.port)],
                        ..FilterChain::default()
                    }],
                    ..Listener::default()
                },
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
