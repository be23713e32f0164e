//! Istio's standard workload metrics (`istio_requests_total`, `istio_tcp_sent_bytes_total`,
//! ...) from upstream Envoy, without Istio's stats filter: Envoy's stats access logger
//! counts each request and connection under tags that Envoy's command operators fill in
//! as the request ends. No per-request work outside Envoy (no log shipped to the agent),
//! and nothing per proxy in config shared by many. Where each label comes from:
//! - the proxy itself (the source at an outbound, the destination at an inbound): the
//!   environment its agent starts Envoy with (`fleetmesh_api::peer`);
//! - the destination, at an outbound: the cluster's metadata (the service) and the
//!   endpoint's (its workload), both written by meshd; the peer certificate (principal);
//! - the source, at an inbound: the peer certificate (principal), and the attributes the
//!   client's sidecar sent in `x-fleetmesh-peer-*` headers, moved into dynamic metadata
//!   and removed before the app sees them (a client without a sidecar can claim any
//!   name there, as with Istio's metadata exchange; the principal is what mTLS proves).
//!
//! Bounded: every logger of a proxy shares one stats scope (`sharing_name`), which holds
//! at most [`MAX_STATS`] counters and as many histograms (past it Envoy creates no new
//! series), and a peer's header values are cut to 63 DNS-label characters, so a hostile
//! client cannot grow a proxy's memory. Sharing also keeps the counts when a listener is
//! replaced: a scope of the listener's own went with it, and the counts back to 0.
//! (Envoy 1.40 in validate mode segfaults on exit after accepting such a config; serving
//! it, it exits cleanly.)
//! Envoy names the series `envoy_istio_*`; the agent serves them under Istio's names.

use crate::pack;

use envoy_types::pb::envoy::config::accesslog::v3::{
    AccessLog, AccessLogFilter, LogTypeFilter, access_log, access_log_filter,
};
use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption, Metadata};
use envoy_types::pb::envoy::data::accesslog::v3::AccessLogType;
use envoy_types::pb::envoy::extensions::access_loggers::stats::v3::{Config, config};
use envoy_types::pb::envoy::extensions::filters::http::header_to_metadata::v3::{
    Config as HeaderToMetadata, config as header_to_metadata,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpFilter, http_filter,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use envoy_types::pb::envoy::r#type::matcher::v3::{RegexMatchAndSubstitute, RegexMatcher};
use envoy_types::pb::envoy::r#type::v3::Scope;
use envoy_types::pb::google::protobuf::{Struct, UInt32Value, UInt64Value, Value, value};
use fleetmesh_api::peer::ATTRIBUTES;
use fleetmesh_model::service::{Endpoint, Service};

/// The filter metadata namespace of meshd's telemetry metadata on clusters and endpoints.
pub const METADATA: &str = "fleetmesh";
/// The dynamic metadata namespace where an inbound keeps what the client's sidecar sent.
const PEER_METADATA: &str = "fleetmesh.peer";
/// Series per kind (counters; histograms) one logger keeps at most: one listener's
/// callers and destinations on a port, response codes and flags.
pub const MAX_STATS: u32 = 500;

/// Which side of the proxy a request or connection passes: Istio's `reporter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Leaving the workload (a sidecar's outbound, a gateway): reporter `source`.
    Outbound,
    /// Arriving for the workload: reporter `destination`.
    Inbound {
        /// Whether the chain terminates mutual TLS (`connection_security_policy`).
        mtls: bool,
    },
}

/// Whether the proxy keeps Istio's workload metrics: not when MeshConfig's
/// `defaultProviders.metrics` leaves Prometheus out; then no stats logger is configured
/// and no peer headers are sent or read, so requests cost what they cost without
/// telemetry.
pub fn enabled(scope: &crate::scope::Scope) -> bool {
    scope.snapshot.mesh.workload_metrics
}

/// `side`, when the proxy keeps workload metrics ([`enabled`]).
pub fn kept(scope: &crate::scope::Scope, side: Side) -> Option<Side> {
    enabled(scope).then_some(side)
}

/// The access logs of an HTTP connection manager on `side`: `istio_requests_total`,
/// `istio_request_duration_milliseconds`, `istio_request_bytes`, `istio_response_bytes`.
pub fn http(side: Option<Side>) -> Vec<AccessLog> {
    let Some(side) = side else {
        return Vec::new();
    };
    let mut tags = labels(side);
    tags.extend([
        tag("request_protocol", "http"),
        tag("response_code", "%RESPONSE_CODE%"),
        tag("grpc_response_status", "%GRPC_STATUS_NUMBER%"),
    ]);
    let histogram = |name: &str, unit: config::histogram::Unit, value: &str| config::Histogram {
        stat: Some(stat(name, &tags)),
        unit: unit as i32,
        value_format: value.into(),
    };
    use config::histogram::Unit;
    vec![logger(
        None,
        vec![counter("requests_total", &tags, None)],
        vec![
            histogram(
                "request_duration_milliseconds",
                Unit::Milliseconds,
                "%DURATION%",
            ),
            histogram("request_bytes", Unit::Bytes, "%BYTES_RECEIVED%"),
            histogram("response_bytes", Unit::Bytes, "%BYTES_SENT%"),
        ],
    )]
}

/// The access logs of a TCP proxy on `side`: `istio_tcp_connections_opened_total` once
/// the upstream connects (at an inbound, that is before the client's certificate is
/// read: its `source_principal` is `unknown`, unlike Istio's), `istio_tcp_connections_closed_total`,
/// `istio_tcp_sent_bytes_total` and `istio_tcp_received_bytes_total` as it ends. The TCP
/// proxy must flush its log on connect (see [`tcp_proxy`]).
fn tcp(side: Side) -> Vec<AccessLog> {
    let mut tags = labels(side);
    tags.push(tag("request_protocol", "tcp"));
    vec![
        logger(
            Some(AccessLogType::TcpUpstreamConnected),
            vec![counter("tcp_connections_opened_total", &tags, None)],
            Vec::new(),
        ),
        logger(
            Some(AccessLogType::TcpConnectionEnd),
            vec![
                counter("tcp_connections_closed_total", &tags, None),
                counter("tcp_sent_bytes_total", &tags, Some("%BYTES_SENT%")),
                counter("tcp_received_bytes_total", &tags, Some("%BYTES_RECEIVED%")),
            ],
            Vec::new(),
        ),
    ]
}

/// A TCP proxy that counts its connections as `side`'s (cluster and stat prefix still
/// to set): its access logs, flushed once the upstream connects too.
pub fn tcp_proxy(side: Option<Side>) -> TcpProxy {
    let Some(side) = side else {
        return TcpProxy::default();
    };
    TcpProxy {
        access_log: tcp(side),
        access_log_options: Some(tcp_proxy::TcpAccessLogOptions {
            flush_access_log_on_connected: true,
            ..Default::default()
        }),
        ..TcpProxy::default()
    }
}

/// The headers a client's sidecar adds to each request it sends: its workload's
/// attributes, read from its environment (whatever the app sent under those names is
/// replaced). Hosts outside the mesh are not told ([`peer_header_names`] removes them).
pub fn peer_headers() -> Vec<HeaderValueOption> {
    ATTRIBUTES
        .iter()
        .map(|a| HeaderValueOption {
            header: Some(HeaderValue {
                key: a.header.into(),
                value: format!("%ENVIRONMENT({})%", a.env),
                ..HeaderValue::default()
            }),
            append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
            ..HeaderValueOption::default()
        })
        .collect()
}

/// The names of [`peer_headers`].
pub fn peer_header_names() -> Vec<String> {
    ATTRIBUTES.iter().map(|a| a.header.to_string()).collect()
}

/// The HTTP filter of an inbound that moves the client's `x-fleetmesh-peer-*` headers
/// into dynamic metadata, cut to a DNS label's characters and length, and removes them.
pub fn peer_headers_filter() -> HttpFilter {
    let rules = ATTRIBUTES
        .iter()
        .map(|a| header_to_metadata::Rule {
            header: a.header.into(),
            on_header_present: Some(header_to_metadata::KeyValuePair {
                metadata_namespace: PEER_METADATA.into(),
                key: a.key.into(),
                r#type: header_to_metadata::ValueType::String as i32,
                regex_value_rewrite: Some(RegexMatchAndSubstitute {
                    pattern: Some(RegexMatcher {
                        regex: "^([a-z0-9.-]{0,63}).*$".into(),
                        ..RegexMatcher::default()
                    }),
                    substitution: "\\1".into(),
                }),
                ..Default::default()
            }),
            remove: true,
            ..Default::default()
        })
        .collect();
    HttpFilter {
        name: "envoy.filters.http.header_to_metadata".into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(pack(
            HeaderToMetadata {
                request_rules: rules,
                ..HeaderToMetadata::default()
            },
        ))),
        ..HttpFilter::default()
    }
}

/// A cluster's telemetry metadata: the service it sends to (`destination_service`).
pub fn service_metadata(service: &Service) -> Metadata {
    let name = service
        .hostname
        .split_once('.')
        .map_or(service.hostname.as_str(), |(name, _)| name);
    metadata(&[
        ("host", service.hostname.as_str()),
        ("name", name),
        ("namespace", service.namespace.as_str()),
    ])
}

/// The telemetry metadata of an endpoint of `service`: its workload
/// (`destination_workload`, `_namespace`, `_app`, `_version`, `_cluster`). A workload
/// runs in its service's namespace (Services and ServiceEntries select workloads of
/// their own); an endpoint with no known workload has no workload namespace either.
pub fn endpoint_metadata(service: &Service, endpoint: &Endpoint) -> Metadata {
    let namespace = match endpoint.workload {
        Some(_) => service.namespace.as_str(),
        None => "",
    };
    let values = fleetmesh_api::peer::values(
        endpoint.workload.as_deref().unwrap_or_default(),
        namespace,
        &endpoint.labels,
        &endpoint.cluster_id,
    );
    let pairs: Vec<(&str, &str)> = values
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .filter(|(_, v)| !v.is_empty())
        .collect();
    metadata(&pairs)
}

/// Istio's labels of both peers for `side`, in Istio's order.
fn labels(side: Side) -> Vec<config::Tag> {
    let env = |key: &str| format!("%ENVIRONMENT({})%", attribute(key).env);
    let (me, peer_prefix, them) = match side {
        Side::Outbound => ("source", "destination", "%UPSTREAM_METADATA"),
        Side::Inbound { .. } => ("destination", "source", "%DYNAMIC_METADATA"),
    };
    let peer = |key: &str| match side {
        Side::Outbound => format!("{them}({METADATA}:{key})%"),
        Side::Inbound { .. } => format!("{them}({PEER_METADATA}:{key})%"),
    };
    let (my_principal, peer_principal) = match side {
        Side::Outbound => ("%UPSTREAM_LOCAL_URI_SAN%", "%UPSTREAM_PEER_URI_SAN%"),
        Side::Inbound { .. } => ("%DOWNSTREAM_LOCAL_URI_SAN%", "%DOWNSTREAM_PEER_URI_SAN%"),
    };
    let party = |role: &str, value: &dyn Fn(&str) -> String, principal: &str| {
        vec![
            tag(&format!("{role}_workload"), &value("workload")),
            tag(&format!("{role}_workload_namespace"), &value("namespace")),
            tag(&format!("{role}_principal"), principal),
            tag(&format!("{role}_app"), &value("app")),
            tag(&format!("{role}_version"), &value("version")),
            tag(&format!("{role}_cluster"), &value("cluster")),
        ]
    };
    let (source, destination) = match side {
        Side::Outbound => (
            party(me, &env, my_principal),
            party(peer_prefix, &peer, peer_principal),
        ),
        Side::Inbound { .. } => (
            party(peer_prefix, &peer, peer_principal),
            party(me, &env, my_principal),
        ),
    };
    let security = match side {
        Side::Outbound => "unknown",
        Side::Inbound { mtls: true } => "mutual_tls",
        Side::Inbound { mtls: false } => "none",
    };
    let mut tags = vec![tag("reporter", me)];
    tags.extend(source);
    tags.extend(destination);
    tags.extend([
        tag(
            "destination_service",
            &format!("%CLUSTER_METADATA({METADATA}:host)%"),
        ),
        tag(
            "destination_service_name",
            &format!("%CLUSTER_METADATA({METADATA}:name)%"),
        ),
        tag(
            "destination_service_namespace",
            &format!("%CLUSTER_METADATA({METADATA}:namespace)%"),
        ),
        tag("response_flags", "%RESPONSE_FLAGS%"),
        tag("connection_security_policy", security),
    ]);
    tags
}

fn attribute(key: &str) -> &'static fleetmesh_api::peer::Attribute {
    ATTRIBUTES
        .iter()
        .find(|a| a.key == key)
        .expect("a peer attribute")
}

fn tag(name: &str, value_format: &str) -> config::Tag {
    config::Tag {
        name: name.into(),
        value_format: value_format.into(),
        ..config::Tag::default()
    }
}

fn stat(name: &str, tags: &[config::Tag]) -> config::Stat {
    config::Stat {
        name: name.into(),
        tags: tags.to_vec(),
    }
}

/// A counter adding 1 per entry, or the value of `value_format`.
fn counter(name: &str, tags: &[config::Tag], value_format: Option<&str>) -> config::Counter {
    config::Counter {
        stat: Some(stat(name, tags)),
        value_format: value_format.unwrap_or_default().into(),
        value_fixed: value_format.is_none().then_some(UInt64Value { value: 1 }),
    }
}

/// A stats access logger in a bounded `istio` scope, for entries of `only`
/// (every entry when `None`).
fn logger(
    only: Option<AccessLogType>,
    counters: Vec<config::Counter>,
    histograms: Vec<config::Histogram>,
) -> AccessLog {
    let config = Config {
        // One scope for every logger of the proxy (same settings, same sharing name): a
        // listener replaced by a config change hands its series to its successor, where
        // a scope of its own would take them with it (counts back to 0). The bound is
        // then the proxy's, not each listener's.
        stats_scope: Some(Scope {
            prefix: "istio".into(),
            max_counters: Some(UInt32Value { value: MAX_STATS }),
            max_histograms: Some(UInt32Value { value: MAX_STATS }),
            sharing_name: "istio".into(),
            ..Scope::default()
        }),
        counters,
        histograms,
        ..Config::default()
    };
    AccessLog {
        name: "envoy.access_loggers.stats".into(),
        filter: only.map(|log_type| AccessLogFilter {
            filter_specifier: Some(access_log_filter::FilterSpecifier::LogTypeFilter(
                LogTypeFilter {
                    types: vec![log_type as i32],
                    exclude: false,
                },
            )),
        }),
        config_type: Some(access_log::ConfigType::TypedConfig(pack(config))),
    }
}

fn metadata(pairs: &[(&str, &str)]) -> Metadata {
    let fields = pairs
        .iter()
        .map(|(k, v)| {
            let value = Value {
                kind: Some(value::Kind::StringValue(v.to_string())),
            };
            (k.to_string(), value)
        })
        .collect();
    Metadata {
        filter_metadata: [(METADATA.to_string(), Struct { fields })].into(),
        ..Metadata::default()
    }
}
