//! The sidecar layout with iptables capture, as istiod lays it out: `virtualOutbound`
//! (15001) hands each connection to the listener of its original destination port
//! (`0.0.0.0_PORT`, route config named by the port) or passes it through;
//! `virtualInbound` (15006) picks a filter chain by original destination port and sends
//! it to the app; a port no service declares passes through to the app as TCP, under the
//! workload's mTLS mode and AuthorizationPolicies (never a way around them).

use super::{
    OUTBOUND_PORT, hcm, http_listener, inbound_chains, inbound_mtls, inbound_ports, mtls_chains,
    tcp_policies, tls_inspector,
};
use crate::common::ads;
use crate::names;
use crate::pack;
use crate::scope::Scope;
use envoy_types::pb::envoy::config::core::v3::TrafficDirection;
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter, filter, listener_filter,
};
use envoy_types::pb::envoy::extensions::filters::listener::original_dst::v3::OriginalDst;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    Rds, http_connection_manager,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use envoy_types::pb::google::protobuf::BoolValue;
use fleetmesh_api::security::MtlsMode;

pub const INBOUND_PORT: u32 = 15006;

pub fn sidecar(scope: &Scope) -> Vec<Listener> {
    let mut listeners = vec![virtual_outbound(registry_only(scope))];
    for port in scope.http_ports() {
        let manager = hcm(
            &format!("outbound_0.0.0.0_{port}"),
            http_connection_manager::RouteSpecifier::Rds(Rds {
                config_source: Some(ads()),
                route_config_name: port.to_string(),
            }),
            false,
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
        listeners.push(listener);
    }
    listeners.push(virtual_inbound(scope));
    listeners
}

/// Whether traffic to destinations outside the registry is dropped: the proxy's Sidecar
/// decides, else the mesh's `outboundTrafficPolicy`.
fn registry_only(scope: &Scope) -> bool {
    let sidecar_mode = scope
        .sidecar
        .and_then(|s| s.spec.outbound_traffic_policy.as_ref())
        .and_then(|p| p.mode.as_deref());
    match sidecar_mode {
        Some(mode) => mode == "REGISTRY_ONLY",
        None => scope.snapshot.mesh.registry_only,
    }
}

fn virtual_outbound(registry_only: bool) -> Listener {
    let default_chain = if registry_only {
        tcp_chain("BlackHoleFilterChain", names::BLACK_HOLE_CLUSTER)
    } else {
        tcp_chain("PassthroughFilterChain", names::PASSTHROUGH_CLUSTER)
    };
    Listener {
        name: names::VIRTUAL_OUTBOUND.into(),
        address: Some(crate::common::socket_address("0.0.0.0", OUTBOUND_PORT)),
        use_original_dst: Some(BoolValue { value: true }),
        default_filter_chain: Some(default_chain),
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
            .any(|(port, _)| mtls.mode(*port) == MtlsMode::Permissive)
    {
        listener_filters.push(tls_inspector());
    }
    let mut filter_chains = Vec::new();
    for (port, _) in ports {
        let by_port = FilterChainMatch {
            destination_port: crate::common::u32_value(port),
            ..Default::default()
        };
        filter_chains.extend(inbound_chains(scope, port, mtls.mode(port), by_port));
    }
    // Chains without a destination port match only ports that no chain above names.
    let mut passthrough = tcp_policies(scope, names::INBOUND_PASSTHROUGH_CLUSTER);
    passthrough.push(tcp_proxy(names::INBOUND_PASSTHROUGH_CLUSTER));
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

fn tcp_chain(name: &str, cluster: &str) -> FilterChain {
    FilterChain {
        name: name.into(),
        filters: vec![tcp_proxy(cluster)],
        ..FilterChain::default()
    }
}

fn tcp_proxy(cluster: &str) -> Filter {
    let proxy = TcpProxy {
        stat_prefix: cluster.into(),
        cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(cluster.into())),
        ..TcpProxy::default()
    };
    Filter {
        name: "envoy.filters.network.tcp_proxy".into(),
        config_type: Some(filter::ConfigType::TypedConfig(pack(proxy))),
    }
}
