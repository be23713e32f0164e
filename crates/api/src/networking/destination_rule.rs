//! Istio's DestinationRule.

use super::{Labels, PortSelector};
use crate::Duration;
use serde::{Deserialize, Serialize};

/// Istio's DestinationRule: how traffic to one host is balanced, pooled, checked and encrypted once
/// routed, and the subsets routes can name.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DestinationRuleSpec {
    /// The service the rule applies to: a short name (in the rule's namespace), a full name, or a
    /// `*.` wildcard.
    pub host: String,
    /// The host's policy, for every subset and port unless they set their own.
    pub traffic_policy: Option<TrafficPolicy>,
    /// Named groups of the host's endpoints, by label (`version: v1`), that routes can pick.
    #[serde(default)]
    pub subsets: Vec<Subset>,
    /// The namespaces that see the rule: `.` its own, `*` all (the default), or names.
    #[serde(default)]
    pub export_to: Vec<String>,
    /// Only the workloads of the rule's namespace with these labels use the rule (before
    /// a rule of their namespace without a selector).
    pub workload_selector: Option<super::MatchLabels>,
}

/// A named group of a host's endpoints.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Subset {
    /// The name routes use in `destination.subset`.
    pub name: String,
    /// The labels an endpoint must have to belong to the subset.
    #[serde(default)]
    pub labels: Labels,
    /// The subset's own policy, merged field by field over the host's.
    pub traffic_policy: Option<TrafficPolicy>,
}

/// How a client's proxy treats traffic to a host (or a subset, or a port of it).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficPolicy {
    /// How requests are spread across endpoints.
    pub load_balancer: Option<LoadBalancerSettings>,
    /// Limits on connections and requests to the host.
    pub connection_pool: Option<ConnectionPoolSettings>,
    /// When an endpoint that keeps failing is taken out of the rotation for a while.
    pub outlier_detection: Option<OutlierDetection>,
    /// TLS to the endpoints (Istio mutual TLS is automatic inside the mesh).
    pub tls: Option<ClientTlsSettings>,
    /// Settings for single ports, which take precedence over the host's.
    #[serde(default)]
    pub port_level_settings: Vec<PortTrafficPolicy>,
}

/// A traffic policy for one port: the same settings, no nesting.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortTrafficPolicy {
    /// The port these settings are for.
    pub port: Option<PortSelector>,
    /// Load balancing on this port.
    pub load_balancer: Option<LoadBalancerSettings>,
    /// Connection limits on this port.
    pub connection_pool: Option<ConnectionPoolSettings>,
    /// Outlier detection on this port.
    pub outlier_detection: Option<OutlierDetection>,
    /// TLS on this port.
    pub tls: Option<ClientTlsSettings>,
}

/// How requests are spread: one simple algorithm, or a consistent hash; and where, by locality.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancerSettings {
    /// A simple algorithm (unset: least request).
    pub simple: Option<SimpleLb>,
    /// Requests with the same key (a header, cookie, source IP or query parameter) go to the same
    /// endpoint.
    pub consistent_hash: Option<ConsistentHashLb>,
    /// Locality-aware balancing and failover for this host.
    pub locality_lb_setting: Option<LocalityLbSetting>,
    /// Slow start: an endpoint that has just appeared gets a share of requests growing
    /// over `duration` (round robin and least request only, as Istio applies it).
    pub warmup: Option<Warmup>,
    /// Deprecated by Istio for `warmup.duration`.
    pub warmup_duration_secs: Option<Duration>,
}

/// Slow start: how a new endpoint's share of requests grows.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Warmup {
    /// How long the share grows before it is full.
    pub duration: Option<Duration>,
    /// The share a new endpoint starts at, in percent of its weight (default 10).
    pub minimum_percent: Option<f64>,
    /// How the share grows: 1 (the default) linearly, above 1 slower at first.
    pub aggression: Option<f64>,
}

/// Locality-aware load balancing (Istio's `LocalityLoadBalancerSetting`): with outlier
/// detection, a proxy prefers endpoints nearest its own locality and fails over outward
/// (or to `failover`'s region); `distribute` instead splits traffic by weight.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityLbSetting {
    /// Shares of traffic from a locality to others, instead of failover by nearness.
    #[serde(default)]
    pub distribute: Vec<LocalityDistribute>,
    /// Where a region's traffic goes when its own endpoints are unhealthy.
    #[serde(default)]
    pub failover: Vec<LocalityFailover>,
    /// Labels (`topology.kubernetes.io/region`, ...) ordering endpoints by how many they share with
    /// the client.
    #[serde(default)]
    pub failover_priority: Vec<String>,
    /// Turns locality-aware balancing off (`false`) for this host.
    pub enabled: Option<bool>,
}

/// Traffic from proxies in `from` goes to the localities of `to` by weight (percent).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityDistribute {
    /// The clients' locality, `region/zone/subzone` (`*` matches any part).
    pub from: String,
    /// Destination locality → weight (all weights summing to 100).
    #[serde(default)]
    pub to: std::collections::BTreeMap<String, u32>,
}

/// When region `from` has no healthy endpoint, region `to` is next.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityFailover {
    /// The region whose endpoints failed.
    pub from: String,
    /// The region that takes its traffic.
    pub to: String,
}

/// Istio's simple load balancing: LEAST_REQUEST (of two endpoints picked at random, the
/// one with fewer active requests; also when unset, as in Istio, and for LEAST_CONN, which
/// Istio deprecated for it), ROUND_ROBIN (each endpoint in turn), RANDOM, and PASSTHROUGH
/// (to the address the client connected to, the service's endpoints unused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[expect(
    missing_docs,
    reason = "described in the enum's doc: per-variant docs make the CRD schema one the API server refuses"
)]
pub enum SimpleLb {
    Unspecified,
    LeastConn,
    LeastRequest,
    Random,
    Passthrough,
    RoundRobin,
}

/// Consistent hashing: the key a request is hashed by, and the hash table.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsistentHashLb {
    /// Hash the value of this request header.
    pub http_header_name: Option<String>,
    /// Hash this cookie (which the proxy sets on a request without it when the cookie has a `ttl`).
    pub http_cookie: Option<HttpCookie>,
    /// Hash the client's IP address.
    pub use_source_ip: Option<bool>,
    /// Hash the value of this query parameter.
    pub http_query_parameter_name: Option<String>,
    /// Deprecated by Istio for `ringHash.minimumRingSize`.
    pub minimum_ring_size: Option<u64>,
    /// A ring hash table (Istio's default).
    pub ring_hash: Option<RingHash>,
    /// A Maglev hash table.
    pub maglev: Option<Maglev>,
}

/// Consistent hashing on a ring (Envoy's default: 1024 entries at least).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RingHash {
    /// Entries in the ring (Envoy's default 1024); more spread load more evenly.
    pub minimum_ring_size: Option<u64>,
}

/// Consistent hashing with Maglev's table (a prime size below 5,000,011).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Maglev {
    /// Entries in the table: a prime (Envoy's default 65537).
    pub table_size: Option<u64>,
}

/// The cookie a consistent hash uses.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpCookie {
    /// The cookie's name.
    pub name: String,
    /// The path the proxy sets on a cookie it generates.
    pub path: Option<String>,
    /// The lifetime of the cookie the proxy sets when a request has none (without it, none is set;
    /// 0: a session cookie).
    pub ttl: Option<Duration>,
    /// Attributes of the cookie the proxy sets when the request has none.
    #[serde(default)]
    pub attributes: Vec<CookieAttribute>,
}

/// An attribute of a generated cookie (`SameSite=Strict`, `Secure`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CookieAttribute {
    /// The attribute's name.
    pub name: String,
    /// Its value; none for a flag such as `Secure`.
    pub value: Option<String>,
}

/// Limits on what clients' proxies open to a host.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionPoolSettings {
    /// TCP connection limits and keepalive.
    pub tcp: Option<TcpSettings>,
    /// HTTP request limits.
    pub http: Option<HttpSettings>,
}

/// TCP settings of the connections to a host.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpSettings {
    /// Connections a proxy opens to the host at most (Envoy's default: 2^32 - 1).
    pub max_connections: Option<u32>,
    /// How long a connection may take to open (default 10 s).
    pub connect_timeout: Option<Duration>,
    /// How long an upstream connection may stay idle (HTTP's `idleTimeout` wins).
    pub idle_timeout: Option<Duration>,
    /// Upstream connections are closed (drained) after this long.
    pub max_connection_duration: Option<Duration>,
    /// TCP keepalive on the connections.
    pub tcp_keepalive: Option<TcpKeepalive>,
}

/// SO_KEEPALIVE on upstream connections; unset values are the OS's.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpKeepalive {
    /// Unanswered probes before the connection is dropped (the OS's default when unset).
    pub probes: Option<u32>,
    /// Idle time before the first probe (whole seconds).
    pub time: Option<Duration>,
    /// Time between probes (whole seconds).
    pub interval: Option<Duration>,
}

/// HTTP settings of the connections to a host.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpSettings {
    /// Requests that may wait for a connection at most.
    pub http1_max_pending_requests: Option<u32>,
    /// Requests in progress to the host at most.
    pub http2_max_requests: Option<u32>,
    /// Requests per connection before it is closed (0 or unset: no limit; 1: no keep-alive).
    pub max_requests_per_connection: Option<u32>,
    /// Retries in progress to the host at most.
    pub max_retries: Option<u32>,
    /// How long an idle connection is kept (default 1 h).
    pub idle_timeout: Option<Duration>,
    /// Whether HTTP/1.1 to the destination is upgraded to HTTP/2.
    pub h2_upgrade_policy: Option<H2UpgradePolicy>,
    /// Upstream connections speak the protocol the client spoke (never upgraded).
    pub use_client_protocol: Option<bool>,
    /// Streams per upstream HTTP/2 connection.
    pub max_concurrent_streams: Option<u32>,
    /// HTTP/2 PING keepalive on the connections.
    pub http2_keep_alive: Option<Http2KeepAlive>,
}

/// Istio's `h2UpgradePolicy` (the mesh-wide default is `DEFAULT`: no upgrade).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[expect(
    missing_docs,
    reason = "described in the enum's doc: per-variant docs make the CRD schema one the API server refuses"
)]
pub enum H2UpgradePolicy {
    Default,
    DoNotUpgrade,
    Upgrade,
}

/// HTTP/2 PINGs on upstream HTTP/2 connections.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Http2KeepAlive {
    /// Time between PINGs.
    pub interval: Option<Duration>,
    /// How long a PING may go unanswered before the connection is closed.
    pub timeout: Option<Duration>,
}

/// Passive health checking: an endpoint that fails too often is ejected for a while.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetection {
    /// Deprecated by Istio and still applied as istiod does: that many gateway errors
    /// (502, 503, 504) in a row eject a host, and 5xx answers alone do not.
    pub consecutive_errors: Option<u32>,
    /// 5xx answers (and connection failures) in a row that eject an endpoint (Envoy's default 5; 0
    /// turns the check off).
    pub consecutive_5xx_errors: Option<u32>,
    /// 502, 503 and 504 answers (and connection failures) in a row that eject an endpoint (0 turns
    /// the check off).
    pub consecutive_gateway_errors: Option<u32>,
    /// How often endpoints are checked (default 10 s).
    pub interval: Option<Duration>,
    /// How long a first ejection lasts; each next one is longer (default 30 s).
    pub base_ejection_time: Option<Duration>,
    /// The share of endpoints that may be ejected at once, in percent (default 10).
    pub max_ejection_percent: Option<u32>,
    /// Below this share of healthy endpoints, in percent, nothing is ejected.
    pub min_health_percent: Option<u32>,
    /// Connection failures and timeouts (local-origin errors) are counted apart from
    /// the upstream's 5xx answers.
    pub split_external_local_origin_errors: Option<bool>,
    /// With the split: how many local-origin errors in a row eject a host.
    pub consecutive_local_origin_failures: Option<u32>,
}

/// TLS from a client's proxy to the host.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientTlsSettings {
    /// Plaintext, TLS, mutual TLS with given files, or Istio's mutual TLS.
    pub mode: Option<ClientTlsMode>,
    /// The SNI name sent in the handshake.
    pub sni: Option<String>,
    /// MUTUAL: the client certificate, a file on the proxy's host.
    pub client_certificate: Option<String>,
    /// MUTUAL: the client certificate's key, a file on the proxy's host.
    pub private_key: Option<String>,
    /// A Secret holding the client certificate (Istio's form; not supported yet).
    pub credential_name: Option<String>,
    /// The file of CA certificates that check the server's certificate.
    pub ca_certificates: Option<String>,
    /// A file of certificate revocation lists (PEM): a server certificate revoked there is
    /// refused. Read by the proxy's agent, like `caCertificates`.
    pub ca_crl: Option<String>,
    /// The names the server's certificate must carry (any one of them).
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
    /// Accept any server certificate (not recommended).
    pub insecure_skip_verify: Option<bool>,
}

/// How a client's proxy connects to a host: DISABLE (plaintext), SIMPLE (TLS, the server checked
/// against `caCertificates` when given), MUTUAL (TLS with the client certificate of the given
/// files), ISTIO_MUTUAL (mutual TLS with the workload's mesh certificate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[expect(
    missing_docs,
    reason = "described in the enum's doc: per-variant docs make the CRD schema one the API server refuses"
)]
pub enum ClientTlsMode {
    Disable,
    Simple,
    Mutual,
    IstioMutual,
}
