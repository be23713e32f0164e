//! LDS: a sidecar's listeners (without capture: an HTTP-proxy listener and inbound
//! listeners on the workload's address; with capture: istiod's layout, in `captured`), or
//! a gateway's listeners per Gateway server port.

mod captured;
mod forward;
mod sni;

use crate::Interception;
use crate::common::{ads, socket_address};
use crate::credentials;
use crate::names;
use crate::route::action::http_filters;
use crate::scope::{GatewayServer, Scope};
use crate::telemetry::{self, Side};
use crate::tls;
use crate::{NamedResource, pack};
use envoy_types::pb::envoy::config::core::v3::Http1ProtocolOptions;
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter, filter, listener_filter,
};
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route, route_action,
    route_match, virtual_host,
};
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, Rds, http_connection_manager,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use envoy_types::pb::google::protobuf::BoolValue;
use fleetmesh_api::networking::{ServerTlsMode, ServerTlsSettings};
use fleetmesh_api::security::MtlsMode;
use fleetmesh_model::Protocol;
use fleetmesh_model::security::{self, InboundMtls};
use fleetmesh_model::service::labels_match;
use std::collections::{BTreeMap, BTreeSet};

/// The port a sidecar's app uses as its HTTP proxy (Istio's outbound capture port).
pub const OUTBOUND_PORT: u32 = 15001;

/// Where a sidecar's local app listens for one inbound port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppAddress {
    pub ip: String,
    pub port: u32,
}

/// A port the proxy accepts traffic for, and the app behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundPort {
    pub number: u32,
    pub app: AppAddress,
    /// HTTP ports get an HTTP connection manager (routes, JWT and HTTP RBAC); the others
    /// are proxied as TCP under network RBAC.
    pub protocol: Protocol,
}

/// The ports the proxy accepts traffic for: the Sidecar resource's `ingress` if it has
/// one, else the target ports of the services selecting the proxy, with the app on
/// `127.0.0.1:PORT` (Istio's default). When services disagree on a target port's
/// protocol, HTTP wins: a TCP chain would silently skip HTTP policies.
pub fn inbound_ports(scope: &Scope) -> Vec<InboundPort> {
    let mut ports: BTreeMap<u32, InboundPort> = BTreeMap::new();
    let mut add = |port: InboundPort| {
        let known = ports.entry(port.number).or_insert_with(|| port.clone());
        if port.protocol.is_http() && !known.protocol.is_http() {
            *known = port;
        }
    };
    match scope.sidecar.filter(|s| !s.spec.ingress.is_empty()) {
        Some(sidecar) => {
            for ingress in &sidecar.spec.ingress {
                let number = ingress.port.number;
                let app = ingress
                    .default_endpoint
                    .as_deref()
                    .and_then(|e| e.parse::<std::net::SocketAddr>().ok())
                    .map(|a| AppAddress {
                        ip: a.ip().to_string(),
                        port: u32::from(a.port()),
                    })
                    .unwrap_or_else(|| AppAddress::local(number));
                let name = ingress.port.name.as_deref().unwrap_or_default();
                let protocol = Protocol::detect(ingress.port.protocol.as_deref(), name);
                add(InboundPort {
                    number,
                    app,
                    protocol,
                });
            }
        }
        None => {
            for service in scope.own_services() {
                for port in &service.ports {
                    add(InboundPort {
                        number: port.target_port,
                        app: AppAddress::local(port.target_port),
                        protocol: port.protocol,
                    });
                }
            }
        }
    }
    ports.into_values().collect()
}

impl AppAddress {
    fn local(port: u32) -> AppAddress {
        AppAddress {
            ip: "127.0.0.1".into(),
            port,
        }
    }
}

pub fn sidecar(scope: &Scope) -> Vec<NamedResource> {
    let listeners = match scope.proxy.interception {
        Interception::None => uncaptured(scope),
        Interception::Redirect => captured::sidecar(scope),
    };
    listeners.into_iter().map(named).collect()
}

/// Without capture: the HTTP-proxy listener on the workload's own address, and an inbound
/// listener on it per port.
fn uncaptured(scope: &Scope) -> Vec<Listener> {
    let bind = scope.proxy.bind_address();
    let manager = outbound_hcm(scope, "outbound_http_proxy", names::HTTP_PROXY_ROUTE);
    let mut listeners = vec![http_listener(
        names::VIRTUAL_OUTBOUND,
        bind,
        OUTBOUND_PORT,
        manager,
    )];
    let mtls = inbound_mtls(scope);
    for port in inbound_ports(scope) {
        let mode = mtls.mode(port.number);
        listeners.push(Listener {
            name: names::bound_listener(bind, port.number),
            address: Some(socket_address(bind, port.number)),
            listener_filters: (mode == MtlsMode::Permissive)
                .then(tls_inspector)
                .into_iter()
                .collect(),
            filter_chains: inbound_chains(scope, &port, mode, FilterChainMatch::default()),
            ..Listener::default()
        });
    }
    listeners
}

/// The proxy's effective PeerAuthentication.
fn inbound_mtls(scope: &Scope) -> InboundMtls {
    security::inbound_mtls(scope.snapshot, &scope.proxy.namespace, &scope.proxy.labels)
}

/// Peeks at a connection's first bytes: tells TLS from plaintext (PERMISSIVE) and reads
/// the SNI (gateways).
fn tls_inspector() -> ListenerFilter {
    ListenerFilter {
        name: "envoy.filters.listener.tls_inspector".into(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(pack(
            TlsInspector::default(),
        ))),
        ..ListenerFilter::default()
    }
}

/// Inbound `port`'s filter chains by its mTLS mode (see [`mtls_chains`]): HTTP through
/// the inbound HTTP connection manager, anything else proxied as TCP to the app.
fn inbound_chains(
    scope: &Scope,
    port: &InboundPort,
    mode: MtlsMode,
    base: FilterChainMatch,
) -> Vec<FilterChain> {
    let cluster = names::inbound_cluster(port.number);
    let filters = |side| {
        if port.protocol.is_http() {
            vec![inbound_hcm(scope, port.number, side)]
        } else {
            inbound_tcp(scope, &cluster, side)
        }
    };
    mtls_chains(scope, &cluster, filters, mode, base)
}

/// Filter chains running `filters` (of the chain's side: with mTLS or without) under an
/// mTLS mode: STRICT terminates mTLS (a plaintext client fails the handshake), DISABLE is
/// plaintext, PERMISSIVE has one chain of each. `base` is what every chain also matches
/// (the destination port, with capture).
fn mtls_chains(
    scope: &Scope,
    name: &str,
    filters: impl Fn(Side) -> Vec<Filter>,
    mode: MtlsMode,
    base: FilterChainMatch,
) -> Vec<FilterChain> {
    let trust_domain = &scope.snapshot.mesh.trust_domain;
    let chain = |mtls: bool, transport: &str| FilterChain {
        name: name.to_string(),
        filter_chain_match: Some(FilterChainMatch {
            transport_protocol: transport.into(),
            ..base.clone()
        })
        .filter(|m| *m != FilterChainMatch::default()),
        filters: filters(Side::Inbound { mtls }),
        transport_socket: mtls.then(|| tls::istio_downstream(trust_domain)),
        ..FilterChain::default()
    };
    match mode {
        MtlsMode::Strict => vec![chain(true, "")],
        MtlsMode::Disable => vec![chain(false, "")],
        MtlsMode::Permissive | MtlsMode::Unset => {
            vec![chain(true, "tls"), chain(false, "raw_buffer")]
        }
    }
}

/// The HTTP connection manager of inbound `port`: everything goes to the app, which
/// learns the caller's verified identity from `x-forwarded-client-cert` (set from the
/// mTLS peer certificate; whatever the client sent is dropped).
/// RequestAuthentications and AuthorizationPolicies are enforced here, ahead of the
/// router.
fn inbound_hcm(scope: &Scope, port: u32, side: Side) -> Filter {
    let mut hcm = hcm(
        &names::inbound_cluster(port),
        http_connection_manager::RouteSpecifier::RouteConfig(inbound_route_config(port)),
        false,
        telemetry::kept(scope, side),
    );
    enforce_policies(scope, &mut hcm);
    // First: the caller's sidecar's headers are read, and gone, before anything else.
    if telemetry::enabled(scope) {
        hcm.http_filters.insert(0, telemetry::peer_headers_filter());
    }
    hcm.forward_client_cert_details =
        http_connection_manager::ForwardClientCertDetails::SanitizeSet as i32;
    hcm.set_current_client_cert_details =
        Some(http_connection_manager::SetCurrentClientCertDetails {
            subject: Some(BoolValue { value: true }),
            dns: true,
            uri: true,
            ..Default::default()
        });
    hcm_as_filter(hcm)
}

/// An inbound TCP connection to `cluster`: the proxy's AuthorizationPolicies, then the
/// TCP proxy.
fn inbound_tcp(scope: &Scope, cluster: &str, side: Side) -> Vec<Filter> {
    let mut filters = tcp_policies(scope, cluster);
    filters.push(tcp_proxy(cluster, telemetry::kept(scope, side)));
    filters
}

/// The AuthorizationPolicies that select the proxy, as RBAC network filters for plain TCP
/// connections (see [`crate::authz::network_filters`]).
fn tcp_policies(scope: &Scope, stat_prefix: &str) -> Vec<Filter> {
    let policies = security::authorization_policies(
        scope.snapshot,
        &scope.proxy.namespace,
        &scope.proxy.labels,
    );
    crate::authz::network_filters(&policies, stat_prefix)
}

/// The RequestAuthentications and AuthorizationPolicies that select the proxy (a
/// sidecar's inbound side, or a gateway), enforced ahead of `hcm`'s router. JWTs are
/// validated before RBAC reads their claims.
fn enforce_policies(scope: &Scope, hcm: &mut HttpConnectionManager) {
    let (snapshot, namespace, labels) =
        (scope.snapshot, &scope.proxy.namespace, &scope.proxy.labels);
    let policies = security::authorization_policies(snapshot, namespace, labels);
    let authentications = security::request_authentications(snapshot, namespace, labels);
    let mut filters: Vec<_> = crate::jwt::http_filter(snapshot, &authentications)
        .into_iter()
        .collect();
    filters.extend(crate::authz::http_filters(&policies));
    filters.append(&mut hcm.http_filters);
    hcm.http_filters = filters;
}

/// Everything arriving for inbound `port` goes to the app behind it.
fn inbound_route_config(port: u32) -> RouteConfiguration {
    let cluster = names::inbound_cluster(port);
    RouteConfiguration {
        name: cluster.clone(),
        virtual_hosts: vec![VirtualHost {
            name: "inbound|http".into(),
            domains: vec!["*".into()],
            routes: vec![Route {
                name: "default".into(),
                r#match: Some(RouteMatch {
                    path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
                    ..Default::default()
                }),
                action: Some(route::Action::Route(RouteAction {
                    cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster)),
                    timeout: Some(crate::common::duration(std::time::Duration::ZERO)),
                    ..Default::default()
                })),
                ..Route::default()
            }],
            ..VirtualHost::default()
        }],
        ..RouteConfiguration::default()
    }
}

/// A gateway's listeners (one per server port of the Gateways selecting it) and their
/// route configs. HTTPS servers terminate TLS, one filter chain per server chosen by SNI;
/// PASSTHROUGH and TCP servers forward connections as they are (`forward`).
pub fn gateway<'a>(scope: &Scope<'a>) -> GatewayResources<'a> {
    let (ports, credentials) = servers_by_port(scope);
    let bind = scope.proxy.bind_address();
    let mut listeners = Vec::new();
    let mut routes = Vec::new();
    for (port, servers) in ports {
        let forwarded = forward::chains(scope, port, &servers.forwarding, !servers.http.is_empty());
        if servers.http.is_empty() {
            // Only forwarding servers: no HTTP here, and no listener without a chain
            // (Envoy would refuse it).
            if !forwarded.is_empty() {
                listeners.push(named(Listener {
                    name: names::bound_listener(bind, port),
                    address: Some(socket_address(bind, port)),
                    listener_filters: tls_inspector_for(&forwarded),
                    filter_chains: forwarded,
                    ..Listener::default()
                }));
            }
            continue;
        }
        listeners.push(named(http_gateway_listener(
            scope,
            port,
            &servers.http,
            forwarded,
        )));
        let bound: Vec<&GatewayServer> = servers.http.iter().map(|s| &s.server).collect();
        let mut route = crate::route::gateway(scope, port, &bound);
        if servers.https_redirect {
            for host in &mut route.virtual_hosts {
                host.require_tls = virtual_host::TlsRequirementType::All as i32;
            }
        }
        routes.push(route);
    }
    GatewayResources {
        listeners,
        routes,
        credentials,
    }
}

/// One port's servers, by what the listener does with them.
#[derive(Default)]
struct PortServers<'a> {
    /// Served by the HTTP connection manager (plain or behind TLS).
    http: Vec<HttpServer<'a>>,
    /// Forwarded as they are (PASSTHROUGH, TCP).
    forwarding: forward::Servers,
    /// A plain HTTP server answers every request with a redirect to HTTPS.
    https_redirect: bool,
}

/// The servers of the Gateways selecting the proxy, by port, and the credentials their
/// TLS servers use.
fn servers_by_port<'a>(
    scope: &Scope<'a>,
) -> (
    BTreeMap<u32, PortServers<'a>>,
    BTreeMap<String, credentials::Resolved<'a>>,
) {
    let mut ports: BTreeMap<u32, PortServers> = BTreeMap::new();
    let mut credentials = BTreeMap::new();
    for gw in &scope.snapshot.gateways {
        if !labels_match(&gw.spec.selector, &scope.proxy.labels) || gw.spec.selector.is_empty() {
            continue;
        }
        for server in &gw.spec.servers {
            let bound = GatewayServer {
                gateway: gw.metadata.key(),
                hosts: server
                    .hosts
                    .iter()
                    .map(|h| h.split_once('/').map_or(h.as_str(), |(_, d)| d).to_string())
                    .collect(),
            };
            let on_port = ports.entry(server.port.number).or_default();
            // Validated: every server has a known protocol and TLS mode.
            let Some(protocol) = server.port.protocol() else {
                continue;
            };
            let tls = server.tls.as_ref().filter(|_| protocol.is_tls());
            if tls.is_none() && server.tls.as_ref().and_then(|t| t.https_redirect) == Some(true) {
                on_port.https_redirect = true;
            }
            let mode = tls.and_then(ServerTlsSettings::tls_mode);
            if mode == Some(ServerTlsMode::Passthrough) {
                on_port.forwarding.passthrough.push(bound);
                continue;
            }
            if protocol == Protocol::Tcp {
                on_port.forwarding.tcp.push(bound);
                continue;
            }
            let tls = match tls {
                None => None,
                Some(settings) if settings.credential_name.is_some() => {
                    // Missing, incomplete or not this gateway's to read: the server is
                    // left out (see `credentials`).
                    let Some(resolved) = credentials::resolve(scope, settings) else {
                        continue;
                    };
                    let mutual = mode == Some(ServerTlsMode::Mutual);
                    credentials.insert(resolved.name.clone(), resolved.clone());
                    Some(ServerTls::Credential(resolved, mutual, settings))
                }
                Some(settings) => Some(ServerTls::Files(settings)),
            };
            on_port.http.push(HttpServer { server: bound, tls });
        }
    }
    (ports, credentials)
}

/// The listener of a port with HTTP servers: the connection manager (behind each TLS
/// server's certificate, chosen by SNI, when any has TLS), then `forwarded` chains.
fn http_gateway_listener(
    scope: &Scope,
    port: u32,
    servers: &[HttpServer],
    forwarded: Vec<FilterChain>,
) -> Listener {
    let bind = scope.proxy.bind_address();
    let route_name = names::gateway_route(port);
    let mut manager = hcm(
        &route_name,
        http_connection_manager::RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: route_name.clone(),
        }),
        true,
        telemetry::kept(scope, Side::Outbound),
    );
    // A gateway is a workload too: policies selecting it apply to what it serves.
    enforce_policies(scope, &mut manager);
    let mut listener = http_listener(&names::bound_listener(bind, port), bind, port, manager);
    if servers.iter().any(|s| s.tls.is_some()) {
        let plain = listener.filter_chains.remove(0);
        let mut claimed = BTreeSet::new();
        listener.filter_chains = servers
            .iter()
            .filter_map(|s| {
                let tls = s.tls.as_ref()?;
                let hosts = unclaimed(&s.server.hosts, &mut claimed)?;
                Some(tls_chain(&plain, &hosts, tls))
            })
            .collect();
        listener.listener_filters = vec![tls_inspector()];
    }
    if listener.listener_filters.is_empty() {
        listener.listener_filters = tls_inspector_for(&forwarded);
    }
    listener.filter_chains.extend(forwarded);
    listener
}

/// The TLS inspector, when a chain is chosen by SNI (only then: a protocol where the
/// server speaks first would wait for the inspector's timeout).
fn tls_inspector_for(chains: &[FilterChain]) -> Vec<ListenerFilter> {
    let by_sni = chains.iter().any(|c| {
        c.filter_chain_match
            .as_ref()
            .is_some_and(|m| m.transport_protocol == "tls")
    });
    by_sni.then(tls_inspector).into_iter().collect()
}

/// A gateway's listeners and routes, and the credentials their TLS servers use.
pub struct GatewayResources<'a> {
    pub listeners: Vec<NamedResource>,
    pub routes: Vec<RouteConfiguration>,
    pub credentials: BTreeMap<String, credentials::Resolved<'a>>,
}

/// Where a TLS server's certificate comes from.
enum ServerTls<'a> {
    /// Files on the gateway's disk.
    Files(&'a ServerTlsSettings),
    /// A Secret served over ADS; `true` for MUTUAL; the server's settings.
    Credential(credentials::Resolved<'a>, bool, &'a ServerTlsSettings),
}

/// A Gateway server whose connections the HTTP connection manager serves, and where its
/// TLS certificate comes from (plain HTTP: none).
struct HttpServer<'a> {
    server: GatewayServer,
    tls: Option<ServerTls<'a>>,
}

/// The hosts of a TLS server that no server before it on the port serves. Two chains for
/// one SNI name make Envoy refuse the whole listener, so, as istiod does, the first server
/// (Gateways in namespace/name order) keeps a name; a server left with none has no chain.
fn unclaimed(hosts: &[String], claimed: &mut BTreeSet<String>) -> Option<Vec<String>> {
    let names = if hosts.iter().any(|h| h == "*") {
        vec!["*".to_string()]
    } else {
        hosts.to_vec()
    };
    let fresh: Vec<String> = names
        .into_iter()
        .filter(|name| claimed.insert(name.clone()))
        .collect();
    (!fresh.is_empty()).then_some(fresh)
}

/// `plain`'s filters behind the server's TLS, for the SNI names of its hosts (any name
/// for `*`).
fn tls_chain(plain: &FilterChain, hosts: &[String], tls: &ServerTls) -> FilterChain {
    let server_names = if hosts.iter().any(|h| h == "*") {
        Vec::new()
    } else {
        hosts.to_vec()
    };
    let transport_socket = match tls {
        ServerTls::Files(settings) => tls::gateway_downstream(settings),
        ServerTls::Credential(resolved, mutual, settings) => {
            credentials::downstream(resolved, *mutual, settings)
        }
    };
    FilterChain {
        filter_chain_match: (!server_names.is_empty()).then(|| FilterChainMatch {
            server_names,
            ..FilterChainMatch::default()
        }),
        transport_socket: Some(transport_socket),
        ..plain.clone()
    }
}

fn http_listener(name: &str, bind: &str, port: u32, manager: HttpConnectionManager) -> Listener {
    Listener {
        name: name.to_string(),
        address: Some(socket_address(bind, port)),
        filter_chains: vec![FilterChain {
            filters: vec![hcm_as_filter(manager)],
            ..FilterChain::default()
        }],
        ..Listener::default()
    }
}

/// How long a request waits for a cluster it is the first to use (on demand) before
/// it fails with 503.
const ON_DEMAND_CLUSTER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A sidecar's outbound connection manager, routing by route config `route_config`
/// (over RDS). An on-demand sidecar asks for the virtual host of each Host it has not
/// called before, and for a route's cluster it does not hold, holding the request until
/// they arrive (Envoy's `on_demand` filter: first, so that every later filter sees the
/// route).
pub(crate) fn outbound_hcm(
    scope: &Scope,
    stat_prefix: &str,
    route_config: &str,
) -> HttpConnectionManager {
    use envoy_types::pb::envoy::extensions::filters::http::on_demand::v3::{OnDemand, OnDemandCds};
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
        HttpFilter, http_filter,
    };
    let mut manager = hcm(
        stat_prefix,
        http_connection_manager::RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: route_config.into(),
        }),
        false,
        telemetry::kept(scope, Side::Outbound),
    );
    if scope.proxy.on_demand {
        let on_demand = HttpFilter {
            name: "envoy.filters.http.on_demand".into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(pack(OnDemand {
                // A route's cluster it does not hold yet is fetched over ADS too.
                odcds: Some(OnDemandCds {
                    source: Some(ads()),
                    timeout: Some(crate::common::duration(ON_DEMAND_CLUSTER_TIMEOUT)),
                    ..OnDemandCds::default()
                }),
            }))),
            ..HttpFilter::default()
        };
        manager.http_filters.insert(0, on_demand);
    }
    manager
}

fn hcm(
    stat_prefix: &str,
    route_specifier: http_connection_manager::RouteSpecifier,
    edge: bool,
    side: Option<Side>,
) -> HttpConnectionManager {
    HttpConnectionManager {
        access_log: telemetry::http(side),
        stat_prefix: stat_prefix.to_string(),
        codec_type: http_connection_manager::CodecType::Auto as i32,
        route_specifier: Some(route_specifier),
        http_filters: http_filters(),
        // Clients use sidecars as explicit HTTP proxies: `GET http://reviews:9080/ HTTP/1.1`.
        http_protocol_options: Some(Http1ProtocolOptions {
            allow_absolute_url: Some(BoolValue { value: true }),
            ..Default::default()
        }),
        use_remote_address: Some(BoolValue { value: edge }),
        ..HttpConnectionManager::default()
    }
}

/// Proxies a connection as bytes to `cluster`, counted as `side`'s (if counted).
fn tcp_proxy(cluster: &str, side: Option<Side>) -> Filter {
    let proxy = TcpProxy {
        stat_prefix: cluster.into(),
        cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(cluster.into())),
        ..telemetry::tcp_proxy(side)
    };
    Filter {
        name: "envoy.filters.network.tcp_proxy".into(),
        config_type: Some(filter::ConfigType::TypedConfig(pack(proxy))),
    }
}

fn hcm_as_filter(hcm: HttpConnectionManager) -> Filter {
    Filter {
        name: "envoy.filters.network.http_connection_manager".into(),
        config_type: Some(filter::ConfigType::TypedConfig(pack(hcm))),
    }
}

fn named(listener: Listener) -> NamedResource {
    NamedResource {
        name: listener.name.clone(),
        resource: pack(listener),
    }
}
