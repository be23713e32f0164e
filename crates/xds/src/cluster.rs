//! CDS: one cluster per visible service port (and per DestinationRule subset), the
//! inbound clusters of the proxy's own app, and istiod's fixed clusters.

use crate::common::{ads, duration, socket, socket_address, u32_value};
use crate::locality::LocalityPolicy;
use crate::names;
use crate::port_settings::PortSettings;
use crate::scope::Scope;
use crate::tls;
use crate::{NamedResource, pack};
use envoy_types::pb::envoy::config::cluster::v3::{
    CircuitBreakers, Cluster, OutlierDetection, UpstreamConnectionOptions,
    circuit_breakers::Thresholds, cluster,
};
use envoy_types::pb::envoy::config::core::v3::{
    BindConfig, Http2ProtocolOptions, HttpProtocolOptions, KeepaliveSettings, TcpKeepalive,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions as UpstreamHttpOptions, http_protocol_options,
};
use envoy_types::pb::google::protobuf::Any;
use fleetmesh_api::networking::{
    ClientTlsMode, ConnectionPoolSettings, H2UpgradePolicy, LoadBalancerSettings, SimpleLb,
};
use fleetmesh_model::service::Resolution;
use fleetmesh_model::{Protocol, Service, ServicePort};
use std::time::Duration;

/// Istio's default connect timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One cluster per visible service port and DestinationRule subset: the same for every
/// proxy with the same [`crate::SharedKey`].
pub fn outbound_clusters(scope: &Scope) -> Vec<NamedResource> {
    let mut clusters = Vec::new();
    for service in &scope.services {
        let rule = scope.snapshot.destination_rule(
            &service.hostname,
            &scope.proxy.namespace,
            &scope.proxy.labels,
        );
        let mtls = IstioMtls {
            trust_domain: &scope.snapshot.mesh.trust_domain,
            peers: service_identities(service, &scope.snapshot.mesh.trust_domain),
        };
        let spec = rule.map(|r| &r.spec);
        for port in &service.ports {
            let settings = PortSettings::of_subset(spec, None, port.port);
            clusters.push(outbound(service, port, "", settings, &mtls));
            for subset in spec.iter().flat_map(|r| &r.subsets) {
                let settings = PortSettings::of_subset(spec, Some(&subset.name), port.port);
                clusters.push(outbound(service, port, &subset.name, settings, &mtls));
            }
        }
    }
    named(clusters)
}

/// The inbound clusters of the proxy's own app and the fixed ones.
pub fn local_clusters(scope: &Scope) -> Vec<NamedResource> {
    let mut clusters = Vec::new();
    for port in crate::listener::inbound_ports(scope) {
        let mut cluster = inbound(port.number, &port.app);
        // The service callers reach this port by, for the metrics' destination_service.
        cluster.metadata = scope
            .own_services()
            .find(|s| s.ports.iter().any(|p| p.target_port == port.number))
            .map(|s| crate::telemetry::service_metadata(s));
        clusters.push(cluster);
    }
    clusters.push(black_hole());
    if scope.proxy.interception == crate::Interception::Redirect {
        // Captured traffic with no service of the mesh behind it goes where it was sent.
        clusters.push(original_destination(names::PASSTHROUGH_CLUSTER));
        clusters.push(inbound_passthrough());
    }
    named(clusters)
}

fn named(clusters: Vec<Cluster>) -> Vec<NamedResource> {
    clusters
        .into_iter()
        .map(|c| NamedResource {
            name: c.name.clone(),
            resource: Any {
                type_url: <Cluster as prost::Name>::type_url(),
                value: crate::sorted_map::encode_cluster(&c),
            },
        })
        .collect()
}

fn outbound(
    service: &Service,
    port: &ServicePort,
    subset: &str,
    settings: PortSettings,
    mtls: &IstioMtls,
) -> Cluster {
    let name = names::outbound_cluster(port.port, subset, &service.hostname);
    let mut c = Cluster {
        name: name.clone(),
        connect_timeout: Some(duration(CONNECT_TIMEOUT)),
        metadata: Some(crate::telemetry::service_metadata(service)),
        ..Cluster::default()
    };
    // A ServiceEntry without resolution, or PASSTHROUGH balancing (as istiod applies it):
    // to the address the client connected to, the service's endpoints unused.
    let passthrough = settings.passthrough();
    let original_destination = passthrough || service.resolution == Resolution::Passthrough;
    if original_destination {
        c.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::OriginalDst as i32,
        ));
        c.lb_policy = cluster::LbPolicy::ClusterProvided as i32;
    } else if service.resolution == Resolution::Dns {
        c.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::StrictDns as i32,
        ));
        c.dns_lookup_family = cluster::DnsLookupFamily::V4Only as i32;
        c.load_assignment = Some(dns_assignment(&name, service, port));
    } else {
        c.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        ));
        c.eds_cluster_config = Some(cluster::EdsClusterConfig {
            eds_config: Some(ads()),
            service_name: String::new(),
        });
    }
    if let Some(options) = upstream_http_options(port.protocol, settings.connection_pool) {
        c.typed_extension_protocol_options.insert(
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_string(),
            pack(options),
        );
    }
    let tls = settings.tls;
    let sni = tls::istio_sni(port.port, subset, &service.hostname);
    match (tls, tls.and_then(|t| t.mode)) {
        (Some(settings), Some(ClientTlsMode::Simple | ClientTlsMode::Mutual)) => {
            c.transport_socket = Some(tls::originate(
                settings,
                &service.hostname,
                &service.subject_alt_names,
            ));
        }
        // As istiod: the rule's SNI and names, when it gives them, over the computed ones.
        (Some(settings), Some(ClientTlsMode::IstioMutual)) => {
            let sni = settings.sni.as_deref().unwrap_or(&sni);
            let peers = match settings.subject_alt_names.as_slice() {
                [] => mtls.peers.as_slice(),
                names => names,
            };
            c.transport_socket = Some(tls::istio_upstream(sni, mtls.trust_domain, peers));
        }
        // Auto mTLS cannot choose per endpoint where there are none: as istiod, mutual TLS
        // to whatever address it is, when the service's workloads run sidecars.
        (_, None) if passthrough && service.resolution == Resolution::Static => {
            c.transport_socket = service
                .endpoints
                .iter()
                .any(tls::has_sidecar)
                .then(|| tls::istio_upstream(&sni, mtls.trust_domain, &mtls.peers));
        }
        // Auto mTLS: to the endpoints that have a sidecar.
        (_, None) if service.resolution == Resolution::Static => {
            c.transport_socket_matches =
                tls::auto_mtls_matches(&sni, mtls.trust_domain, &mtls.peers);
        }
        // DISABLE is plaintext.
        _ => {}
    }
    if !original_destination {
        apply_load_balancer(&mut c, settings.load_balancer);
    }
    if LocalityPolicy::of(&settings).distributes() {
        crate::locality::weigh_by_locality(&mut c);
    }
    if let Some(pool) = settings.connection_pool {
        apply_connection_pool(&mut c, pool);
    }
    if let Some(outlier) = settings.outlier_detection {
        apply_outlier_detection(&mut c, outlier);
    }
    c
}

/// Istio's outlier detection: consecutive 5xx (and, when configured, gateway errors)
/// eject a host; success-rate ejection stays off. A count of 0 turns its kind off.
/// Istio's deprecated `consecutiveErrors` counts gateway errors alone, unless the newer
/// fields say otherwise.
fn apply_outlier_detection(c: &mut Cluster, outlier: &fleetmesh_api::networking::OutlierDetection) {
    let deprecated = outlier.consecutive_errors.filter(|n| *n > 0);
    let gateway_errors = outlier.consecutive_gateway_errors.or(deprecated);
    let enforced = |on: bool| u32_value(if on { 100 } else { 0 });
    c.outlier_detection = Some(OutlierDetection {
        consecutive_5xx: outlier.consecutive_5xx_errors.and_then(u32_value),
        consecutive_gateway_failure: gateway_errors.and_then(u32_value),
        interval: outlier.interval.map(|d| duration(d.as_std())),
        base_ejection_time: outlier.base_ejection_time.map(|d| duration(d.as_std())),
        max_ejection_percent: outlier.max_ejection_percent.and_then(u32_value),
        // Istio turns gateway errors on only when configured.
        enforcing_consecutive_gateway_failure: gateway_errors.and_then(|n| enforced(n > 0)),
        enforcing_consecutive_5xx: enforced(match outlier.consecutive_5xx_errors {
            Some(n) => n > 0,
            None => deprecated.is_none(),
        }),
        enforcing_success_rate: u32_value(0),
        ..OutlierDetection::default()
    });
    if outlier.split_external_local_origin_errors == Some(true)
        && let Some(detection) = &mut c.outlier_detection
    {
        detection.split_external_local_origin_errors = true;
        detection.enforcing_local_origin_success_rate = u32_value(0);
        if let Some(failures) = outlier.consecutive_local_origin_failures.filter(|f| *f > 0) {
            detection.consecutive_local_origin_failure = u32_value(failures);
            detection.enforcing_consecutive_local_origin_failure = u32_value(100);
        }
    }
    if let Some(min_health) = outlier.min_health_percent {
        let common = c.common_lb_config.get_or_insert_with(Default::default);
        common.healthy_panic_threshold = Some(envoy_types::pb::envoy::r#type::v3::Percent {
            value: f64::from(min_health),
        });
    }
}

/// The rule's balancing, or istiod's default (least request) when it names none.
fn apply_load_balancer(c: &mut Cluster, lb: Option<&LoadBalancerSettings>) {
    use cluster::LbPolicy;
    let default = LoadBalancerSettings::default();
    let lb = lb.unwrap_or(&default);
    if let Some(hash) = &lb.consistent_hash {
        use envoy_types::pb::google::protobuf::UInt64Value;
        if let Some(maglev) = &hash.maglev {
            c.lb_policy = LbPolicy::Maglev as i32;
            c.lb_config = Some(cluster::LbConfig::MaglevLbConfig(cluster::MaglevLbConfig {
                table_size: maglev.table_size.map(|value| UInt64Value { value }),
            }));
            return;
        }
        let minimum = hash
            .ring_hash
            .as_ref()
            .and_then(|r| r.minimum_ring_size)
            .or(hash.minimum_ring_size);
        c.lb_policy = LbPolicy::RingHash as i32;
        c.lb_config = Some(cluster::LbConfig::RingHashLbConfig(
            cluster::RingHashLbConfig {
                minimum_ring_size: minimum.map(|value| UInt64Value { value }),
                ..Default::default()
            },
        ));
        return;
    }
    let slow_start = slow_start(lb);
    let (policy, config) = match lb.simple {
        // Istio's default, as its LEAST_CONN now is.
        None | Some(SimpleLb::Unspecified | SimpleLb::LeastConn | SimpleLb::LeastRequest) => (
            LbPolicy::LeastRequest,
            slow_start.map(|slow_start_config| {
                cluster::LbConfig::LeastRequestLbConfig(cluster::LeastRequestLbConfig {
                    slow_start_config: Some(slow_start_config),
                    ..Default::default()
                })
            }),
        ),
        Some(SimpleLb::Random) => (LbPolicy::Random, None),
        // PASSTHROUGH never gets here (an original-destination cluster).
        Some(SimpleLb::RoundRobin | SimpleLb::Passthrough) => (
            LbPolicy::RoundRobin,
            slow_start.map(|slow_start_config| {
                cluster::LbConfig::RoundRobinLbConfig(cluster::RoundRobinLbConfig {
                    slow_start_config: Some(slow_start_config),
                })
            }),
        ),
    };
    c.lb_policy = policy as i32;
    c.lb_config = config;
}

/// Istio's `warmup` (or its deprecated `warmupDurationSecs`) as Envoy's slow start, with
/// Istio's defaults: linear growth from 10% of an endpoint's weight.
fn slow_start(lb: &LoadBalancerSettings) -> Option<cluster::SlowStartConfig> {
    use envoy_types::pb::envoy::config::core::v3::RuntimeDouble;
    use envoy_types::pb::envoy::r#type::v3::Percent;
    let (window, minimum_percent, aggression) = match (&lb.warmup, lb.warmup_duration_secs) {
        (Some(warmup), _) => (warmup.duration?, warmup.minimum_percent, warmup.aggression),
        (None, Some(window)) => (window, None, None),
        (None, None) => return None,
    };
    Some(cluster::SlowStartConfig {
        slow_start_window: Some(duration(window.as_std())),
        aggression: Some(RuntimeDouble {
            default_value: aggression.unwrap_or(1.0),
            // Envoy requires a key; no operator sets this one, so the value stands.
            runtime_key: "fleetmesh.slow_start.aggression".into(),
        }),
        min_weight_percent: Some(Percent {
            value: minimum_percent.unwrap_or(10.0),
        }),
    })
}

/// Istio's connection pool: circuit-breaker thresholds, the connect timeout and TCP
/// keepalive (the HTTP options are [`upstream_http_options`]).
fn apply_connection_pool(c: &mut Cluster, pool: &ConnectionPoolSettings) {
    let mut thresholds = Thresholds::default();
    if let Some(tcp) = &pool.tcp {
        thresholds.max_connections = tcp.max_connections.and_then(u32_value);
        if let Some(timeout) = tcp.connect_timeout {
            c.connect_timeout = Some(duration(timeout.as_std()));
        }
        if let Some(keepalive) = &tcp.tcp_keepalive {
            // Whole seconds, as the socket options take them; at least 1 (0 is refused).
            let seconds = |d: fleetmesh_api::Duration| {
                u32_value(d.as_std().as_secs().clamp(1, u64::from(u32::MAX)) as u32)
            };
            c.upstream_connection_options = Some(UpstreamConnectionOptions {
                tcp_keepalive: Some(TcpKeepalive {
                    keepalive_probes: keepalive.probes.and_then(u32_value),
                    keepalive_time: keepalive.time.and_then(seconds),
                    keepalive_interval: keepalive.interval.and_then(seconds),
                }),
                ..Default::default()
            });
        }
    }
    if let Some(http) = &pool.http {
        thresholds.max_pending_requests = http.http1_max_pending_requests.and_then(u32_value);
        thresholds.max_requests = http.http2_max_requests.and_then(u32_value);
        thresholds.max_retries = http.max_retries.and_then(u32_value);
    }
    c.circuit_breakers = Some(CircuitBreakers {
        thresholds: vec![thresholds],
        ..CircuitBreakers::default()
    });
}

/// The upstream HTTP protocol options, as istiod builds them (`applyConnectionPool`,
/// `applyH2Upgrade`): HTTP/2 to HTTP2 and gRPC ports and when the pool says `UPGRADE`
/// (never with `useClientProtocol`, which speaks the client's protocol); HTTP/1.1
/// otherwise, stated only when a connection setting needs the options. `None`: Envoy's
/// default, HTTP/1.1 with no limits.
fn upstream_http_options(
    protocol: Protocol,
    pool: Option<&ConnectionPoolSettings>,
) -> Option<UpstreamHttpOptions> {
    use http_protocol_options::explicit_http_config::ProtocolConfig;
    use http_protocol_options::{ExplicitHttpConfig, UpstreamProtocolOptions};
    let http = pool.and_then(|p| p.http.as_ref());
    let tcp = pool.and_then(|p| p.tcp.as_ref());
    let client_protocol = http.and_then(|h| h.use_client_protocol) == Some(true);
    let upgrade = http.and_then(|h| h.h2_upgrade_policy) == Some(H2UpgradePolicy::Upgrade);
    let http2 =
        !client_protocol && (matches!(protocol, Protocol::Http2 | Protocol::Grpc) || upgrade);
    let common = HttpProtocolOptions {
        // HTTP's idle timeout wins over TCP's.
        idle_timeout: http
            .and_then(|h| h.idle_timeout)
            .or(tcp.and_then(|t| t.idle_timeout))
            .map(|d| duration(d.as_std())),
        max_requests_per_connection: http
            .and_then(|h| h.max_requests_per_connection)
            .and_then(u32_value),
        max_connection_duration: tcp
            .and_then(|t| t.max_connection_duration)
            .map(|d| duration(d.as_std())),
        ..HttpProtocolOptions::default()
    };
    let http2_options = Http2ProtocolOptions {
        max_concurrent_streams: http
            .and_then(|h| h.max_concurrent_streams)
            .and_then(u32_value),
        connection_keepalive: http.and_then(|h| h.http2_keep_alive.as_ref()).map(|k| {
            KeepaliveSettings {
                interval: k.interval.map(|d| duration(d.as_std())),
                timeout: k.timeout.map(|d| duration(d.as_std())),
                ..KeepaliveSettings::default()
            }
        }),
        ..Http2ProtocolOptions::default()
    };
    let upstream = if client_protocol {
        UpstreamProtocolOptions::UseDownstreamProtocolConfig(
            http_protocol_options::UseDownstreamHttpConfig {
                http2_protocol_options: Some(http2_options),
                ..Default::default()
            },
        )
    } else if http2 {
        UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
            protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(http2_options)),
        })
    } else if common != HttpProtocolOptions::default() && protocol.is_http() {
        UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
            protocol_config: Some(ProtocolConfig::HttpProtocolOptions(Default::default())),
        })
    } else {
        return None;
    };
    Some(UpstreamHttpOptions {
        common_http_protocol_options: (common != HttpProtocolOptions::default()).then_some(common),
        upstream_protocol_options: Some(upstream),
        ..UpstreamHttpOptions::default()
    })
}

/// What mTLS to one service's sidecars checks: the same for all its clusters.
struct IstioMtls<'a> {
    trust_domain: &'a str,
    /// See [`service_identities`].
    peers: Vec<String>,
}

/// The SPIFFE ids of the workloads behind `service` (a workload without a service account
/// runs as its namespace's `default`, as in Kubernetes): who its sidecars must prove to
/// be. Empty when it has no endpoints yet (any id of the trust domain is accepted then).
fn service_identities(service: &Service, trust_domain: &str) -> Vec<String> {
    let ids: std::collections::BTreeSet<String> = service
        .endpoints
        .iter()
        .map(|e| {
            format!(
                "spiffe://{trust_domain}/ns/{}/sa/{}",
                service.namespace,
                e.service_account.as_deref().unwrap_or("default")
            )
        })
        .chain(service.subject_alt_names.iter().cloned())
        .collect();
    ids.into_iter().collect()
}

/// TLS to a server outside the mesh, checked against the system's trust store.
fn dns_assignment(name: &str, service: &Service, port: &ServicePort) -> ClusterLoadAssignment {
    let lb_endpoints = service
        .endpoints
        .iter()
        .filter_map(|e| {
            let endpoint_port = *e.ports.get(&port.port)?;
            Some(LbEndpoint {
                host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(
                    envoy_types::pb::envoy::config::endpoint::v3::Endpoint {
                        address: Some(socket_address(&e.address, endpoint_port)),
                        ..Default::default()
                    },
                )),
                load_balancing_weight: u32_value(e.weight),
                // No telemetry metadata: a host name resolved by DNS is no workload.
                ..LbEndpoint::default()
            })
        })
        .collect();
    ClusterLoadAssignment {
        cluster_name: name.to_string(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints,
            ..LocalityLbEndpoints::default()
        }],
        ..ClusterLoadAssignment::default()
    }
}

fn inbound(port: u32, app: &crate::listener::AppAddress) -> Cluster {
    let name = names::inbound_cluster(port);
    Cluster {
        name: name.clone(),
        connect_timeout: Some(duration(CONNECT_TIMEOUT)),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: name,
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![LbEndpoint {
                    host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(
                        envoy_types::pb::envoy::config::endpoint::v3::Endpoint {
                            address: Some(socket_address(&app.ip, app.port)),
                            ..Default::default()
                        },
                    )),
                    ..LbEndpoint::default()
                }],
                ..LocalityLbEndpoints::default()
            }],
            ..ClusterLoadAssignment::default()
        }),
        ..Cluster::default()
    }
}

/// Inbound connections to a port no service declares, to the app where they were sent.
/// From 127.0.0.6, the source that capture lets through: from Envoy's own address the
/// connection would be captured again into virtualInbound, Envoy would accept it there
/// and connect again, until its file descriptors ran out.
fn inbound_passthrough() -> Cluster {
    Cluster {
        upstream_bind_config: Some(BindConfig {
            source_address: Some(socket(names::INBOUND_PASSTHROUGH_SOURCE, 0)),
            ..BindConfig::default()
        }),
        ..original_destination(names::INBOUND_PASSTHROUGH_CLUSTER)
    }
}

fn black_hole() -> Cluster {
    Cluster {
        name: names::BLACK_HOLE_CLUSTER.to_string(),
        connect_timeout: Some(duration(CONNECT_TIMEOUT)),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        ..Cluster::default()
    }
}

fn original_destination(name: &str) -> Cluster {
    Cluster {
        name: name.to_string(),
        connect_timeout: Some(duration(CONNECT_TIMEOUT)),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::OriginalDst as i32,
        )),
        lb_policy: cluster::LbPolicy::ClusterProvided as i32,
        ..Cluster::default()
    }
}
