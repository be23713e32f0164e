//! Istio's VirtualService.

use super::{Labels, Percent, PortSelector};
use crate::{Duration, StringMatch};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Istio's VirtualService: how requests to some hosts are matched and routed, for sidecars (`mesh`)
/// or gateways.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualServiceSpec {
    /// The hosts routed: short names (in the VirtualService's namespace), full names, wildcards, or
    /// addresses.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// The Gateways whose proxies use these routes (`namespace/name`), and `mesh` for sidecars;
    /// none: `mesh`.
    #[serde(default)]
    pub gateways: Vec<String>,
    /// HTTP routes, tried in order; the first that matches routes the request.
    #[serde(default)]
    pub http: Vec<HttpRoute>,
    /// TCP routes (opaque connections), tried in order.
    #[serde(default)]
    pub tcp: Vec<TcpRoute>,
    /// TLS routes by SNI name (unterminated TLS), tried in order.
    #[serde(default)]
    pub tls: Vec<TlsRoute>,
    /// The namespaces that see the routes: `.` its own, `*` all (the default), or names.
    #[serde(default)]
    pub export_to: Vec<String>,
}

/// An HTTP route: when it applies, and what it does with a request.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRoute {
    /// A name for the route, shown in the proxy's logs and stats.
    pub name: Option<String>,
    /// Conditions, any one of which selects the route (none: every request).
    #[serde(default, rename = "match")]
    pub matches: Vec<HttpMatchRequest>,
    /// Where requests go, each destination with a weight.
    #[serde(default)]
    pub route: Vec<HttpRouteDestination>,
    /// Answers with a redirect instead of forwarding.
    pub redirect: Option<HttpRedirect>,
    /// Answers by itself instead of forwarding.
    pub direct_response: Option<HttpDirectResponse>,
    /// Rewrites the path or authority before forwarding.
    pub rewrite: Option<HttpRewrite>,
    /// How long a request may take in all, retries included (none by default).
    pub timeout: Option<Duration>,
    /// How failed requests are retried (default: twice, on connection failures and 503s).
    pub retries: Option<HttpRetry>,
    /// Delays or aborts a share of requests, for testing resilience.
    pub fault: Option<HttpFaultInjection>,
    /// A destination that gets a copy of each request, whose answer is dropped.
    pub mirror: Option<Destination>,
    /// The share of requests `mirror` copies (default: all).
    pub mirror_percentage: Option<Percent>,
    /// Deprecated by Istio for `mirrorPercentage`, which wins when both are set.
    pub mirror_percent: Option<u32>,
    /// Several mirrors, each with its share (instead of `mirror`).
    #[serde(default)]
    pub mirrors: Vec<HttpMirrorPolicy>,
    /// Cross-origin resource sharing answered by the proxy.
    pub cors_policy: Option<CorsPolicy>,
    /// Headers set, added or removed on the request and the response.
    pub headers: Option<Headers>,
}

/// A condition on an HTTP request; every field given must match.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpMatchRequest {
    /// A name for the condition, joined to the route's in the proxy's logs.
    pub name: Option<String>,
    /// The path (without the query).
    pub uri: Option<StringMatch>,
    /// The scheme: `http` or `https`.
    pub scheme: Option<StringMatch>,
    /// The method.
    pub method: Option<StringMatch>,
    /// The authority (`Host`).
    pub authority: Option<StringMatch>,
    /// Headers by name, in any case (`@request.auth.claims.NAME`: a claim of the request's
    /// validated JWT).
    #[serde(default)]
    pub headers: BTreeMap<String, StringMatch>,
    /// The port the request came to.
    pub port: Option<u32>,
    /// Labels the calling workload must have (sidecars only).
    #[serde(default)]
    pub source_labels: Labels,
    /// The gateways this condition applies on (overriding the VirtualService's).
    #[serde(default)]
    pub gateways: Vec<String>,
    /// Query parameters by name.
    #[serde(default)]
    pub query_params: BTreeMap<String, StringMatch>,
    /// Match `uri` without regard to case.
    #[serde(default)]
    pub ignore_uri_case: bool,
    /// The namespace of the calling workload (sidecars only).
    pub source_namespace: Option<String>,
    /// Envoy keeps statistics of the requests this match takes under this prefix.
    pub stat_prefix: Option<String>,
    /// Headers that must not match (a missing header counts as empty).
    #[serde(default)]
    pub without_headers: BTreeMap<String, StringMatch>,
}

/// One of a route's mirrors: a copy of each request (of `percentage`, default all) goes to
/// `destination`, whose answer is dropped.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpMirrorPolicy {
    /// Where the copies go.
    pub destination: Destination,
    /// The share of requests copied (default: all).
    pub percentage: Option<Percent>,
}

/// A service (and optionally a subset and port of it) that traffic is sent to.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Destination {
    /// The service's name: a short name (in the VirtualService's namespace), a full name, or a
    /// ServiceEntry host.
    pub host: String,
    /// A subset a DestinationRule of the host defines.
    pub subset: Option<String>,
    /// The port, needed when the service has several.
    pub port: Option<PortSelector>,
}

/// A destination of an HTTP route, with its share and header changes.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteDestination {
    /// Where the requests go.
    pub destination: Destination,
    /// Its share: its weight over the sum of the route's weights (a single destination: all).
    pub weight: Option<i64>,
    /// Header changes for requests to this destination only.
    pub headers: Option<Headers>,
}

/// Header changes on the request and on the response.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Headers {
    /// Changes to the request, before it is forwarded.
    pub request: Option<HeaderOperations>,
    /// Changes to the response, before the client gets it.
    pub response: Option<HeaderOperations>,
}

/// Header changes: set replaces, add appends, remove deletes.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderOperations {
    /// Headers set to these values, replacing any.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Headers added with these values.
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    /// Headers removed.
    #[serde(default)]
    pub remove: Vec<String>,
}

/// A redirect: what of the request's URL changes in the `Location` the client gets.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRedirect {
    /// The path, replaced whole.
    pub uri: Option<String>,
    /// Replaces the matched prefix of the path instead (wins over `uri`, as in Istio).
    pub prefix_rewrite: Option<String>,
    /// The authority (host).
    pub authority: Option<String>,
    /// The port.
    pub port: Option<u32>,
    /// Where the port comes from when `port` is not given.
    pub derive_port: Option<DerivePort>,
    /// The scheme (`https`).
    pub scheme: Option<String>,
    /// The status (default 301).
    pub redirect_code: Option<u32>,
}

/// Where a redirect's port comes from when `port` is not given: FROM_PROTOCOL_DEFAULT,
/// the scheme's default port (the Location names none), or FROM_REQUEST_PORT, the port the
/// request came in on. Documented here rather than per variant: with per-variant docs the
/// generated CRD schema was one the API server refuses as not structural
/// (`crates/kube/tests/crds.rs` applies it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[expect(
    missing_docs,
    reason = "described in the enum's doc: per-variant docs make the CRD schema one the API server refuses"
)]
pub enum DerivePort {
    FromProtocolDefault,
    FromRequestPort,
}

/// An answer the proxy gives itself, without forwarding.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpDirectResponse {
    /// The status code.
    pub status: u32,
    /// The body (none by default).
    pub body: Option<HttpBody>,
}

/// A direct response's body: text, or bytes (base64 in YAML).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpBody {
    /// A text body.
    pub string: Option<String>,
    /// A binary body, base64 in YAML.
    pub bytes: Option<Base64Bytes>,
}

/// Bytes written as standard base64 (protobuf's JSON mapping), decoded once when read,
/// not for every proxy a route is built for. `decoded` is `None` when the text is not
/// base64, which validation reports (so reading never stops at it).
#[derive(Debug, Clone, PartialEq)]
pub struct Base64Bytes {
    /// The base64 text as written.
    pub text: String,
    /// The bytes it stands for.
    pub decoded: Option<Vec<u8>>,
}

impl<'de> Deserialize<'de> for Base64Bytes {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use base64::Engine;
        let text = String::deserialize(deserializer)?;
        let decoded = base64::engine::general_purpose::STANDARD.decode(&text).ok();
        Ok(Base64Bytes { text, decoded })
    }
}

impl Serialize for Base64Bytes {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl schemars::JsonSchema for Base64Bytes {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Base64Bytes".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string"})
    }
}

/// A rewrite of the request before it is forwarded.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRewrite {
    /// Replaces the prefix (or the exact path) the route matched.
    pub uri: Option<String>,
    /// Replaces the authority (`Host`).
    pub authority: Option<String>,
    /// The path rewritten by a regex (instead of `uri`'s prefix).
    pub uri_regex_rewrite: Option<RegexRewrite>,
}

/// Replaces what `match` (RE2) matches in the path with `rewrite` (`\1` for groups).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegexRewrite {
    /// The RE2 regex.
    #[serde(rename = "match")]
    pub pattern: String,
    /// What replaces each match.
    pub rewrite: String,
}

/// How failed requests are retried.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRetry {
    /// Retries at most (0: none).
    #[serde(default)]
    pub attempts: i64,
    /// How long each try may take.
    pub per_try_timeout: Option<Duration>,
    /// When to retry: Envoy's `x-envoy-retry-on` and `x-envoy-retry-grpc-on` conditions and status
    /// codes, comma-separated.
    pub retry_on: Option<String>,
    /// Whether retries may go to other localities.
    pub retry_remote_localities: Option<bool>,
    /// The first wait between tries (Envoy doubles it up to ten times as long).
    pub backoff: Option<Duration>,
    /// Whether a retry avoids the hosts tried before (default: yes, unless the destination
    /// hashes requests to hosts).
    pub retry_ignore_previous_hosts: Option<bool>,
}

/// Faults injected into requests.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpFaultInjection {
    /// Requests held before they are forwarded.
    pub delay: Option<FaultDelay>,
    /// Requests answered with an error instead of forwarded.
    pub abort: Option<FaultAbort>,
}

/// A delay before forwarding.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultDelay {
    /// How long.
    pub fixed_delay: Option<Duration>,
    /// Unset (and no `percent`): no request is delayed, as Istio has it.
    pub percentage: Option<Percent>,
    /// Deprecated by Istio for `percentage`, which wins when both are set.
    pub percent: Option<i32>,
}

/// An error answered instead of forwarding.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultAbort {
    /// The HTTP status.
    pub http_status: Option<i64>,
    /// A gRPC status by name (`UNAVAILABLE`), for gRPC clients.
    pub grpc_status: Option<String>,
    /// Unset: no request is aborted, as Istio has it.
    pub percentage: Option<Percent>,
}

/// gRPC status names and codes, as Istio reads `grpcStatus`.
pub const GRPC_STATUS: &[(&str, u32)] = &[
    ("OK", 0),
    ("CANCELLED", 1),
    ("UNKNOWN", 2),
    ("INVALID_ARGUMENT", 3),
    ("DEADLINE_EXCEEDED", 4),
    ("NOT_FOUND", 5),
    ("ALREADY_EXISTS", 6),
    ("PERMISSION_DENIED", 7),
    ("RESOURCE_EXHAUSTED", 8),
    ("FAILED_PRECONDITION", 9),
    ("ABORTED", 10),
    ("OUT_OF_RANGE", 11),
    ("UNIMPLEMENTED", 12),
    ("INTERNAL", 13),
    ("UNAVAILABLE", 14),
    ("DATA_LOSS", 15),
    ("UNAUTHENTICATED", 16),
];

/// Istio's `unmatchedPreflights`: forwarded to the app (the default), or answered by the
/// proxy without CORS headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[expect(
    missing_docs,
    reason = "described in the enum's doc: per-variant docs make the CRD schema one the API server refuses"
)]
pub enum UnmatchedPreflights {
    UnspecifiedBehavior,
    Forward,
    Ignore,
}

/// Cross-origin resource sharing: which origins may call the host from a browser, and how.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CorsPolicy {
    /// The origins allowed.
    #[serde(default)]
    pub allow_origins: Vec<StringMatch>,
    /// Deprecated by Istio for `allowOrigins`: exact origins, read when that is empty.
    #[serde(default)]
    pub allow_origin: Vec<String>,
    /// What happens to a preflight request whose origin is not allowed.
    pub unmatched_preflights: Option<UnmatchedPreflights>,
    /// The methods allowed (`Access-Control-Allow-Methods`).
    #[serde(default)]
    pub allow_methods: Vec<String>,
    /// The request headers allowed (`Access-Control-Allow-Headers`).
    #[serde(default)]
    pub allow_headers: Vec<String>,
    /// The response headers a browser may read (`Access-Control-Expose-Headers`).
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// How long a browser may keep a preflight's answer.
    pub max_age: Option<Duration>,
    /// Whether requests may carry credentials (cookies).
    pub allow_credentials: Option<bool>,
}

/// A TCP route: when it applies, and where connections go.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpRoute {
    /// Conditions, any one of which selects the route (none: every connection).
    #[serde(default, rename = "match")]
    pub matches: Vec<L4MatchAttributes>,
    /// Where connections go, each destination with a weight.
    #[serde(default)]
    pub route: Vec<RouteDestination>,
}

/// A condition on a TCP connection; every field given must match.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct L4MatchAttributes {
    /// The destination IP must be in one of these (IPs or CIDRs).
    #[serde(default)]
    pub destination_subnets: Vec<String>,
    /// The port the connection came to.
    pub port: Option<u32>,
    /// Labels the calling workload must have (sidecars only).
    #[serde(default)]
    pub source_labels: Labels,
    /// The gateways this condition applies on (overriding the VirtualService's).
    #[serde(default)]
    pub gateways: Vec<String>,
    /// The namespace of the calling workload (sidecars only).
    pub source_namespace: Option<String>,
}

/// A TLS route: connections chosen by their SNI name, forwarded still encrypted.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsRoute {
    /// Conditions, one of which must select the route.
    #[serde(default, rename = "match")]
    pub matches: Vec<TlsMatchAttributes>,
    /// Where connections go, each destination with a weight.
    #[serde(default)]
    pub route: Vec<RouteDestination>,
}

/// A condition on a TLS connection; every field given must match.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsMatchAttributes {
    /// SNI names, wildcards allowed, within the VirtualService's hosts.
    #[serde(default)]
    pub sni_hosts: Vec<String>,
    /// The destination IP must be in one of these (IPs or CIDRs).
    #[serde(default)]
    pub destination_subnets: Vec<String>,
    /// The port the connection came to.
    pub port: Option<u32>,
    /// Labels the calling workload must have (sidecars only).
    #[serde(default)]
    pub source_labels: Labels,
    /// The gateways this condition applies on (overriding the VirtualService's).
    #[serde(default)]
    pub gateways: Vec<String>,
    /// The namespace of the calling workload (sidecars only).
    pub source_namespace: Option<String>,
}

/// A destination of a TCP or TLS route, with its share.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteDestination {
    /// Where connections go.
    pub destination: Destination,
    /// Its share: its weight over the sum of the route's weights (a single destination: all).
    pub weight: Option<i64>,
}
