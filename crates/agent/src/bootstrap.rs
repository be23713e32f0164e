//! Envoy's bootstrap for one workload: node identity, the ADS connection to meshd
//! (plaintext, or TLS checked against the mesh roots), the admin port, and Istio's fixed ports (15021 readiness, 15090 Prometheus stats).

use crate::identity::WorkloadIdentity;
use envoy_types::pb::envoy::config::bootstrap::v3::{Admin, Bootstrap, bootstrap};
use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ApiConfigSource, ApiVersion, ConfigSource, DataSource,
    GrpcService, HeaderValue, Http2ProtocolOptions, Node, Pipe, SocketAddress, TransportSocket,
    address, api_config_source, config_source, data_source, grpc_service, socket_address,
    transport_socket,
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
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, SubjectAltNameMatcher, UpstreamTlsContext,
    common_tls_context, subject_alt_name_matcher,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use envoy_types::pb::google::protobuf::{Duration, Struct, Value, value::Kind};
use envoy_types::util::pack_any;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub const ADMIN_PORT: u32 = 15000;
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
    pub xds_address: SocketAddr,
    pub xds_mode: XdsMode,
    /// Proves the workload's identity to meshd on the xDS stream; a secret.
    pub token: String,
    /// The agent's SDS socket, where Envoy gets its certificate.
    pub sds_socket: PathBuf,
    /// A file of the roots that verify meshd's certificate: Envoy reaches meshd over TLS
    /// (checking that the certificate names meshd's address). `None`: plaintext.
    pub xds_root_cert: Option<PathBuf>,
}

pub fn build(config: &BootstrapConfig) -> Bootstrap {
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
            address: Some(socket(ip, ADMIN_PORT)),
            ..Admin::default()
        }),
        static_resources: Some(bootstrap::StaticResources {
            clusters: vec![
                xds_cluster(config),
                static_cluster(SDS_CLUSTER, pipe(&config.sds_socket), true),
                static_cluster(ADMIN_CLUSTER, socket(ip, ADMIN_PORT), false),
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
                            ..Default::default()
                        },
                    )),
                    initial_metadata: vec![HeaderValue {
                        key: "authorization".into(),
                        value: format!("Bearer {}", config.token),
                        ..HeaderValue::default()
                    }],
                    ..GrpcService::default()
                }],
                set_node_on_first_message_only: true,
                ..ApiConfigSource::default()
            }),
            cds_config: Some(ads()),
            lds_config: Some(ads()),
            ..Default::default()
        }),
        ..Bootstrap::default()
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

fn ads() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
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

fn pipe(path: &Path) -> Address {
    Address {
        address: Some(address::Address::Pipe(Pipe {
            path: path.display().to_string(),
            mode: 0,
        })),
    }
}

/// meshd, over TLS when the agent has its roots.
fn xds_cluster(config: &BootstrapConfig) -> Cluster {
    let host = config.xds_address.ip().to_string();
    let mut cluster = static_cluster(
        XDS_CLUSTER,
        socket(&host, u32::from(config.xds_address.port())),
        true,
    );
    if let Some(roots) = &config.xds_root_cert {
        let meshd = SubjectAltNameMatcher {
            san_type: subject_alt_name_matcher::SanType::IpAddress as i32,
            matcher: Some(StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::Exact(host.clone())),
                ..StringMatcher::default()
            }),
            ..SubjectAltNameMatcher::default()
        };
        let tls = UpstreamTlsContext {
            common_tls_context: Some(CommonTlsContext {
                validation_context_type: Some(
                    common_tls_context::ValidationContextType::ValidationContext(
                        CertificateValidationContext {
                            trusted_ca: Some(DataSource {
                                specifier: Some(data_source::Specifier::Filename(
                                    roots.display().to_string(),
                                )),
                                ..DataSource::default()
                            }),
                            match_typed_subject_alt_names: vec![meshd],
                            ..CertificateValidationContext::default()
                        },
                    ),
                ),
                alpn_protocols: vec!["h2".into()],
                ..CommonTlsContext::default()
            }),
            ..UpstreamTlsContext::default()
        };
        cluster.transport_socket = Some(TransportSocket {
            name: "envoy.transport_sockets.tls".into(),
            config_type: Some(transport_socket::ConfigType::TypedConfig(pack_any(tls))),
        });
    }
    cluster
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
