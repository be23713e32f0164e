//! Envoy's bootstrap for one workload: node identity, the ADS connection (to the agent's
//! xDS socket, which carries it to meshd: no credential and no address of meshd is in
//! Envoy's config), the admin interface, and Istio's fixed ports (15021 readiness, 15090
//! Prometheus stats).
//!
//! Envoy's admin interface can dump every secret and config Envoy holds and stop it
//! (`/quitquitquit`), so it listens on a Unix socket only its own user can open (mode
//! 0600), never on a TCP port another pod or another local user could reach. The
//! readiness and stats ports expose one admin path each, through a proxy listener.

use crate::identity::WorkloadIdentity;
use envoy_types::pb::envoy::config::bootstrap::v3::{
    Admin, Bootstrap, LayeredRuntime, RuntimeLayer, bootstrap, runtime_layer,
};
use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ApiConfigSource, ApiVersion, BackoffStrategy, ConfigSource,
    GrpcService, Http2ProtocolOptions, Node, Pipe, RetryPolicy, SocketAddress, address,
    api_config_source, config_source, grpc_service, socket_address,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route, route_action,
    route_match,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, http_connection_manager, http_filter,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options,
};
use envoy_types::pb::google::protobuf::{Duration, Struct, Value, value::Kind};
use envoy_types::util::pack_any;
use std::path::{Path, PathBuf};

/// Only the owner (Envoy's uid, which the agent shares) may connect to the admin socket.
const ADMIN_SOCKET_MODE: u32 = 0o600;
pub const READINESS_PORT: u32 = 15021;
pub const STATS_PORT: u32 = 15090;
const XDS_CLUSTER: &str = "xds-grpc";
/// Istio's name for the cluster of the agent's SDS socket; xds refers to it by this name.
pub const SDS_CLUSTER: &str = "sds-grpc";
const ADMIN_CLUSTER: &str = "agent-admin";

/// How the proxy talks to meshd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdsMode {
    /// State of the world: every response carries the whole set.
    Sotw,
    /// Incremental: only what changed.
    Delta,
}

#[derive(Clone)]
pub struct BootstrapConfig {
    pub identity: WorkloadIdentity,
    pub xds_mode: XdsMode,
    /// The agent's xDS socket, where Envoy reaches meshd.
    pub xds_socket: PathBuf,
    /// The agent's SDS socket, where Envoy gets its certificate.
    pub sds_socket: PathBuf,
}

/// The bootstrap for `config`, with Envoy's admin interface on the Unix socket `admin`.
pub fn build(config: &BootstrapConfig, admin: &Path) -> Bootstrap {
    let id = &config.identity;
    let ip = id.ip.as_str();
    Bootstrap {
        node: Some(Node {
            id: id.node_id(),
            cluster: id.service_cluster(),
            metadata: Some(node_metadata(id)),
            ..Node::default()
        }),
        admin: Some(Admin {
            address: Some(pipe(admin, ADMIN_SOCKET_MODE)),
            ..Admin::default()
        }),
        static_resources: Some(bootstrap::StaticResources {
            clusters: vec![
                static_cluster(XDS_CLUSTER, pipe(&config.xds_socket, 0), true),
                static_cluster(SDS_CLUSTER, pipe(&config.sds_socket, 0), true),
                static_cluster(ADMIN_CLUSTER, pipe(admin, 0), false),
            ],
            listeners: vec![
                // Istio's readiness probe port: 200 once Envoy has its initial config.
                admin_proxy_listener("readiness", ip, READINESS_PORT, "/healthz/ready", "/ready"),
                admin_proxy_listener(
                    "prometheus",
                    ip,
                    STATS_PORT,
                    "/stats/prometheus",
                    "/stats/prometheus",
                ),
            ],
            ..Default::default()
        }),
        dynamic_resources: Some(bootstrap::DynamicResources {
            ads_config: Some(ApiConfigSource {
                api_type: match config.xds_mode {
                    XdsMode::Sotw => api_config_source::ApiType::Grpc,
                    XdsMode::Delta => api_config_source::ApiType::DeltaGrpc,
                } as i32,
                transport_api_version: ApiVersion::V3 as i32,
                grpc_services: vec![GrpcService {
                    target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                        grpc_service::EnvoyGrpc {
                            cluster_name: XDS_CLUSTER.into(),
                            retry_policy: Some(xds_reconnect()),
                            ..Default::default()
                        },
                    )),
                    ..GrpcService::default()
                }],
                set_node_on_first_message_only: true,
                ..ApiConfigSource::default()
            }),
            cds_config: Some(ads()),
            lds_config: Some(ads()),
            ..Default::default()
        }),
        layered_runtime: Some(runtime()),
        ..Bootstrap::default()
    }
}

/// Envoy's runtime: RE2 programs up to Istio's bootstrap's size (Envoy's default
/// refuses any regex compiling to more than 100 instructions, such as the one that cuts
/// a peer's metric labels to 63 characters).
pub fn runtime() -> LayeredRuntime {
    let number = |n: f64| Value {
        kind: Some(Kind::NumberValue(n)),
    };
    let fields = [
        ("re2.max_program_size.error_level", number(32768.0)),
        ("re2.max_program_size.warn_level", number(1024.0)),
    ];
    LayeredRuntime {
        layers: vec![RuntimeLayer {
            name: "fleetmesh".into(),
            layer_specifier: Some(runtime_layer::LayerSpecifier::StaticLayer(Struct {
                fields: fields
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
            })),
        }],
    }
}

/// How Envoy re-opens its xDS stream after losing it: from 500 ms, jittered, doubling
/// to at most 5 s (Envoy's default grows to 30 s, so a proxy cut off from meshd for a
/// while went on without config for up to half a minute after meshd was back). Retries
/// go to the agent's local socket; at 5 s they cost meshd nothing that matters.
fn xds_reconnect() -> RetryPolicy {
    let millis = |ms: i64| Duration {
        seconds: ms / 1000,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    };
    RetryPolicy {
        retry_back_off: Some(BackoffStrategy {
            base_interval: Some(millis(500)),
            max_interval: Some(millis(5_000)),
        }),
        ..RetryPolicy::default()
    }
}

fn node_metadata(id: &WorkloadIdentity) -> Struct {
    let text = |s: &str| Value {
        kind: Some(Kind::StringValue(s.to_string())),
    };
    let labels = Struct {
        fields: id
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), text(v)))
            .collect(),
    };
    let fields = [
        ("NAMESPACE", text(&id.namespace)),
        ("NAME", text(&id.pod_name)),
        (
            "LABELS",
            Value {
                kind: Some(Kind::StructValue(labels)),
            },
        ),
        ("SERVICE_ACCOUNT", text(&id.service_account)),
        ("ISTIO_VERSION", text(&id.istio_version)),
        ("CLUSTER_ID", text(&id.cluster_id)),
        ("MESH_ID", text(&id.mesh_id)),
        ("INSTANCE_IPS", text(&instance_ips(id))),
        ("INTERCEPTION_MODE", text(&id.interception_mode)),
        (
            "WORKLOAD_NAME",
            text(id.labels.get("app").unwrap_or(&id.pod_name)),
        ),
    ];
    Struct {
        fields: fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    }
}

fn instance_ips(id: &WorkloadIdentity) -> String {
    std::iter::once(&id.ip)
        .chain(&id.other_ips)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(",")
}

/// Listeners and clusters over ADS, with no initial fetch timeout (as Istio's bootstrap):
/// Envoy's default, 15 s, declares Envoy ready without them when meshd is slow to send
/// the first ones, and the app, started once its proxy is ready, then finds its
/// connections refused until they come.
fn ads() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        initial_fetch_timeout: Some(Duration::default()),
        ..ConfigSource::default()
    }
}

fn socket(ip: &str, port: u32) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
            ..SocketAddress::default()
        })),
    }
}

/// A Unix socket; `mode` sets the permissions of one Envoy listens on (0: the default).
fn pipe(path: &Path, mode: u32) -> Address {
    Address {
        address: Some(address::Address::Pipe(Pipe {
            path: path.display().to_string(),
            mode,
        })),
    }
}

fn static_cluster(name: &str, address: Address, http2: bool) -> Cluster {
    let mut c = Cluster {
        name: name.into(),
        connect_timeout: Some(Duration {
            seconds: 1,
            nanos: 0,
        }),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: name.into(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![LbEndpoint {
                    host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                        address: Some(address),
                        ..Endpoint::default()
                    })),
                    ..LbEndpoint::default()
                }],
                ..LocalityLbEndpoints::default()
            }],
            ..ClusterLoadAssignment::default()
        }),
        ..Cluster::default()
    };
    if http2 {
        let options = HttpProtocolOptions {
            upstream_protocol_options: Some(http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
                http_protocol_options::ExplicitHttpConfig {
                    protocol_config: Some(http_protocol_options::explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                        Http2ProtocolOptions::default(),
                    )),
                },
            )),
            ..HttpProtocolOptions::default()
        };
        c.typed_extension_protocol_options.insert(
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".into(),
            pack_any(options),
        );
    }
    c
}

/// A listener on `ip:port` that serves `path` from Envoy's admin `admin_path`.
fn admin_proxy_listener(name: &str, ip: &str, port: u32, path: &str, admin_path: &str) -> Listener {
    let route_config = RouteConfiguration {
        name: name.into(),
        virtual_hosts: vec![VirtualHost {
            name: name.into(),
            domains: vec!["*".into()],
            routes: vec![Route {
                r#match: Some(RouteMatch {
                    path_specifier: Some(route_match::PathSpecifier::Path(path.into())),
                    ..Default::default()
                }),
                action: Some(route::Action::Route(RouteAction {
                    cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(
                        ADMIN_CLUSTER.into(),
                    )),
                    prefix_rewrite: admin_path.into(),
                    ..RouteAction::default()
                })),
                ..Route::default()
            }],
            ..VirtualHost::default()
        }],
        ..RouteConfiguration::default()
    };
    let hcm = HttpConnectionManager {
        stat_prefix: name.into(),
        route_specifier: Some(http_connection_manager::RouteSpecifier::RouteConfig(
            route_config,
        )),
        http_filters: vec![HttpFilter {
            name: "envoy.filters.http.router".into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(
                Router::default(),
            ))),
            ..HttpFilter::default()
        }],
        ..HttpConnectionManager::default()
    };
    Listener {
        name: name.into(),
        address: Some(socket(ip, port)),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(pack_any(hcm))),
            }],
            ..FilterChain::default()
        }],
        ..Listener::default()
    }
}
