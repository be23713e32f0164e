//! Istio's VirtualService.

use super::{Labels, Percent, PortSelector};
use crate::{Duration, StringMatch};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
/// Istio's VirtualService: how requests to some hosts are matched and routed, for sidecars (`mesh`)
/// or gateways.
pub struct VirtualServiceSpec {
    #[serde(default)]
    /// The hosts routed: short names (in the VirtualService's namespace), full names, wildcards, or
    /// addresses.
    pub hosts: Vec<String>,
    #[serde(default)]
    /// The Gateways whose proxies use these routes (`namespace/name`), and `mesh` for sidecars;
    /// none: `mesh`.
    pub gateways: Vec<String>,
    #[serde(default)]
    /// HTTP routes, tried in order; the first that matches routes the request.
    pub http: Vec<HttpRoute>,
    #[serde(default)]
    /// TCP routes (opaque connections), tried in order.
    pub tcp: Vec<TcpRoute>,
    #[serde(default)]
    /// TLS routes by SNI name (unterminated TLS), tried in order.
    pub tls: Vec<TlsRoute>,
    #[serde(default)]
    /// The namespaces that see the routes: `.` its own, `*` all (the default), or names.
    pub export_to: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
/// An HTTP route: when it applies, and what it does with a request.
pub struct HttpRoute {
    /// A name for the route, shown in the proxy's logs and stats.
    pub name: Option<String>,
    #[serde(default, rename = "match")]
    /// Conditions, any one of which selects the route (none: every request).
    pub matches: Vec<HttpMatchRequest>,
    #[serde(default)]
    /// Where requests go, each destination with a weight.
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

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
/// A condition on an HTTP request; every field given must match.
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
    #[serde(default)]
    /// Headers by lower-case name (`@request.auth.claims.NAME`: a claim of the request's validated
    /// JWT).
    pub headers: BTreeMap<String, StringMatch>,
    /// The port the request came to.
    pub port: Option<u32>,
    #[serde(default)]
    /// Labels the calling workload must have (sidecars only).
    pub source_labels: Labels,
    #[serde(default)]
    /// The gateways this condition applies on (overriding the VirtualService's).
    pub gateways: Vec<String>,
    #[serde(default)]
    /// Query parameters by name.
    pub query_params: BTreeMap<String, StringMatch>,
    #[serde(default)]
    /// Match `uri` without regard to case.
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

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
/// A service (and optionally a subset and port of it) that traffic is sent to.
pub struct Destination {
    /// The service's name: a short name (in the VirtualService's namespace), a full name, or a
    /// ServiceEntry host.
    pub host: String,
    /// A subset a DestinationRule of the host defines.
    pub subset: Option<String>,
    /// The port, needed when the service has several.
    pub port: Option<PortSelector>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
/// A destination of an HTTP route, with its share and header changes.
pub struct HttpRouteDestination {
    /// Where the requests go.
    pub destination: Destination,
    /// Its share: its weight over the sum of the route's weights (a single destination: all).
    pub weight: Option<i64>,
    /// Header changes for requests to this destination only.
    pub headers: Option<Headers>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
/// Header changes on the request and on the response.
pub struct Headers {
    /// Changes to the request, before it is forwarded.
    pub request: Option<HeaderOperations>,
    /// Changes to the response, before the client gets it.
    pub response: Option<HeaderOperations>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
/// Header changes: set replaces, add appends, remove deletes.
pub struct HeaderOperations {
    #[serde(default)]
    /// Headers set to these values, replacing any.
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    /// Headers added with these values.
    pub add: BTreeMap<String, String>,
    #[serde(default)]
    /// Headers removed.
    pub remove: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
/// A redirect: what of the request's URL changes in the `Location` the client gets.
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

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
/// A rewrite of the request before it is forwarded.
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
    #[serde(rename = "match")]
    /// The RE2 regex.
    pub pattern: String,
    /// What replaces each match.
    pub rewrite: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
/// How failed requests are retried.
pub struct HttpRetry {
    #[serde(default)]
    /// Retries at most (0: none).
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

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
/// Faults injected into requests.
pub struct HttpFaultInjection {
    /// Requests held before they are forwarded.
    pub delay: Option<FaultDelay>,
    /// Requests answered with an error instead of forwarded.
    pub abort: Option<FaultAbort>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
/// A delay before forwarding.
pub struct FaultDelay {
    /// How long.
    pub fixed_delay: Option<Duration>,
    /// Unset (and no `percent`): no request is delayed, as Istio has it.
    pub percentage: Option<Percent>,
    /// Deprecated by Istio for `percentage`, which wins when both are set.
    pub percent: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
/// An error answered instead of forwarding.
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

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
/// Cross-origin resource sharing: which origins may call the host from a browser, and how.
pub struct CorsPolicy {
    #[serde(default)]
    /// The origins allowed.
    pub allow_origins: Vec<StringMatch>,
    /// Deprecated by Istio for `allowOrigins`: exact origins, read when that is empty.
    #[serde(default)]
    pub allow_origin: Vec<String>,
    /// What happens to a preflight request whose origin is not allowed.
    pub unmatched_preflights: Option<UnmatchedPreflights>,
    #[serde(default)]
    /// The methods allowed (`Access-Control-Allow-Methods`).
    pub allow_methods: Vec<String>,
    #[serde(default)]
    /// The request headers allowed (`Access-Control-Allow-Headers`).
    pub allow_headers: Vec<String>,
    #[serde(default)]
    /// The response headers a browser may read (`Access-Control-Expose-Headers`).
    pub expose_headers: Vec<String>,
    /// How long a browser may keep a preflight's answer.
    pub max_age: Option<Duration>,
    /// Whether requests may carry credentials (cookies).
    pub allow_credentials: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
/// A TCP route: when it applies, and where connections go.
pub struct TcpRoute {
    #[serde(default, rename = "match")]
    /// Conditions, any one of which selects the route (none: every connection).
    pub matches: Vec<L4MatchAttributes>,
    #[serde(default)]
    /// Where connections go, each destination with a weight.
    pub route: Vec<RouteDestination>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
/// A condition on a TCP connection; every field given must match.
pub struct L4MatchAttributes {
    #[serde(default)]
    /// The destination IP must be in one of these (IPs or CIDRs).
    pub destination_subnets: Vec<String>,
    /// The port the connection came to.
    pub port: Option<u32>,
    #[serde(default)]
    /// Labels the calling workload must have (sidecars only).
    pub source_labels: Labels,
    #[serde(default)]
    /// The gateways this condition applies on (overriding the VirtualService's).
    pub gateways: Vec<String>,
    /// The namespace of the calling workload (sidecars only).
    pub source_namespace: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
/// A TLS route: connections chosen by their SNI name, forwarded still encrypted.
pub struct TlsRoute {
    #[serde(default, rename = "match")]
    /// Conditions, one of which must select the route.
    pub matches: Vec<TlsMatchAttributes>,
    #[serde(default)]
    /// Where connections go, each destination with a weight.
    pub route: Vec<RouteDestination>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
/// A condition on a TLS connection; every field given must match.
pub struct TlsMatchAttributes {
    #[serde(default)]
    /// SNI names, wildcards allowed, within the VirtualService's hosts.
    pub sni_hosts: Vec<String>,
    #[serde(default)]
    /// The destination IP must be in one of these (IPs or CIDRs).
    pub destination_subnets: Vec<String>,
    /// The port the connection came to.
    pub port: Option<u32>,
    #[serde(default)]
    /// Labels the calling workload must have (sidecars only).
    pub source_labels: Labels,
    #[serde(default)]
    /// The gateways this condition applies on (overriding the VirtualService's).
    pub gateways: Vec<String>,
    /// The namespace of the calling workload (sidecars only).
    pub source_namespace: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
/// A destination of a TCP or TLS route, with its share.
pub struct RouteDestination {
    /// Where connections go.
    pub destination: Destination,
    /// Its share: its weight over the sum of the route's weights (a single destination: all).
    pub weight: Option<i64>,
}
