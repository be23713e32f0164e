//! What a matched route does: forward (weights, retries, timeouts, mirror, rewrite,
//! hashing), redirect, and the per-route fault, CORS and header settings.

use super::matching;
use crate::common::{duration, percent, u32_value};
use crate::names;
use crate::pack;
use crate::port_settings::PortSettings;
use crate::scope::Scope;
use envoy_types::pb::envoy::config::core::v3::{
    DataSource, HeaderValue, HeaderValueOption, RuntimeFractionalPercent, data_source,
    header_value_option::HeaderAppendAction,
};
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, RedirectAction, RetryPolicy, Route, RouteAction, WeightedCluster,
    redirect_action, retry_policy, route,
    route_action::{self, HashPolicy, RequestMirrorPolicy, hash_policy},
    weighted_cluster::ClusterWeight,
};
use envoy_types::pb::envoy::extensions::filters::common::fault::v3::{FaultDelay, fault_delay};
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy as EnvoyCors;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{
    FaultAbort, HttpFault, fault_abort,
};
use envoy_types::pb::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate;
use envoy_types::pb::envoy::r#type::matcher::v3::RegexMatchAndSubstitute;
use envoy_types::pb::google::protobuf::BoolValue;
use fleetmesh_api::networking::{
    DerivePort, Destination, GRPC_STATUS, HeaderOperations, Headers, HttpDirectResponse,
    HttpRedirect, HttpRoute, UnmatchedPreflights, VirtualServiceSpec,
};
use fleetmesh_api::resource::Config;
use fleetmesh_model::resolve_host;

pub const FAULT_FILTER: &str = "envoy.filters.http.fault";
pub const CORS_FILTER: &str = "envoy.filters.http.cors";

/// Istio's default retry policy for routes without `retries`.
const DEFAULT_RETRY_ON: &str =
    "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";
const DEFAULT_RETRIES: u32 = 2;

/// The route for `http` (its match is filled in by the caller).
pub fn route(scope: &Scope, vs: &Config<VirtualServiceSpec>, http: &HttpRoute, port: u32) -> Route {
    let mut route = Route::default();
    route.action = Some(match (&http.redirect, &http.direct_response) {
        (Some(redirect), _) => route::Action::Redirect(redirect_action(redirect, port)),
        (None, Some(direct)) => route::Action::DirectResponse(direct_response(direct)),
        (None, None) => {
            // Istio drops zero-weight destinations (when there is more than one).
            let several = http.route.len() > 1;
            let destinations: Vec<_> = http
                .route
                .iter()
                .map(|d| {
                    (
                        &d.destination,
                        d.weight.unwrap_or(if several { 0 } else { 100 }) as u32,
                        d.headers.as_ref(),
                    )
                })
                .filter(|(_, weight, _)| !several || *weight > 0)
                .collect();
            route::Action::Route(forward(
                scope,
                http,
                &destinations,
                &vs.metadata.namespace,
                port,
            ))
        }
    });
    if let Some(headers) = &http.headers {
        apply_headers(&mut route, headers);
    }
    if let Some(fault) = &http.fault {
        let config = HttpFault {
            delay: fault.delay.as_ref().and_then(|d| {
                Some(FaultDelay {
                    fault_delay_secifier: Some(fault_delay::FaultDelaySecifier::FixedDelay(
                        duration(d.fixed_delay?.as_std()),
                    )),
                    // Unspecified: none, as Istio has it.
                    percentage: Some(percent(
                        d.percentage
                            .map(|p| p.value)
                            .or(d.percent.map(f64::from))
                            .unwrap_or(0.0),
                    )),
                })
            }),
            abort: fault.abort.as_ref().and_then(|a| {
                let error_type = match (a.http_status, &a.grpc_status) {
                    (Some(status), _) => fault_abort::ErrorType::HttpStatus(status as u32),
                    (None, Some(name)) => fault_abort::ErrorType::GrpcStatus(
                        GRPC_STATUS.iter().find(|(known, _)| known == name)?.1,
                    ),
                    (None, None) => return None,
                };
                Some(FaultAbort {
                    error_type: Some(error_type),
                    percentage: Some(percent(a.percentage.map_or(0.0, |p| p.value))),
                    ..FaultAbort::default()
                })
            }),
            ..HttpFault::default()
        };
        route
            .typed_per_filter_config
            .insert(FAULT_FILTER.to_string(), pack(config));
    }
    if let Some(cors) = &http.cors_policy {
        let config = EnvoyCors {
            allow_origin_string_match: if cors.allow_origins.is_empty() {
                let exact = |origin: &String| fleetmesh_api::StringMatch::Exact(origin.clone());
                cors.allow_origin
                    .iter()
                    .map(exact)
                    .map(|m| matching::string(&m))
                    .collect()
            } else {
                cors.allow_origins.iter().map(matching::string).collect()
            },
            allow_methods: cors.allow_methods.join(","),
            allow_headers: cors.allow_headers.join(","),
            expose_headers: cors.expose_headers.join(","),
            max_age: cors
                .max_age
                .map(|d| d.as_std().as_secs().to_string())
                .unwrap_or_default(),
            allow_credentials: cors.allow_credentials.map(|value| BoolValue { value }),
            // Istio forwards preflights of origins it does not allow unless told IGNORE.
            forward_not_matching_preflights: Some(BoolValue {
                value: cors.unmatched_preflights != Some(UnmatchedPreflights::Ignore),
            }),
            ..EnvoyCors::default()
        };
        route
            .typed_per_filter_config
            .insert(CORS_FILTER.to_string(), pack(config));
    }
    route
}

/// Istio's redirect: `prefixRewrite` wins over `uri`; a port (given, or the request's
/// with `derivePort: FROM_REQUEST_PORT`) is left out of the Location when it is the
/// scheme's default.
fn redirect_action(redirect: &HttpRedirect, listener_port: u32) -> RedirectAction {
    let path = match (&redirect.prefix_rewrite, &redirect.uri) {
        (Some(prefix), _) => Some(redirect_action::PathRewriteSpecifier::PrefixRewrite(
            prefix.clone(),
        )),
        (None, Some(uri)) => Some(redirect_action::PathRewriteSpecifier::PathRedirect(
            uri.clone(),
        )),
        (None, None) => None,
    };
    let port = match (redirect.port, redirect.derive_port) {
        (Some(port), _) => port,
        (None, Some(DerivePort::FromRequestPort)) => listener_port,
        (None, _) => 0,
    };
    let scheme = redirect.scheme.as_deref().unwrap_or("http");
    let default_port = matches!((scheme, port), ("http", 80) | ("https", 443));
    RedirectAction {
        host_redirect: redirect.authority.clone().unwrap_or_default(),
        port_redirect: if default_port { 0 } else { port },
        path_rewrite_specifier: path,
        scheme_rewrite_specifier: redirect
            .scheme
            .clone()
            .map(redirect_action::SchemeRewriteSpecifier::SchemeRedirect),
        response_code: match redirect.redirect_code.unwrap_or(301) {
            302 => redirect_action::RedirectResponseCode::Found,
            303 => redirect_action::RedirectResponseCode::SeeOther,
            307 => redirect_action::RedirectResponseCode::TemporaryRedirect,
            308 => redirect_action::RedirectResponseCode::PermanentRedirect,
            _ => redirect_action::RedirectResponseCode::MovedPermanently,
        } as i32,
        ..RedirectAction::default()
    }
}

fn direct_response(direct: &HttpDirectResponse) -> DirectResponseAction {
    let body = direct.body.as_ref().and_then(|body| {
        let specifier = match (&body.string, &body.bytes) {
            (Some(text), _) => data_source::Specifier::InlineString(text.clone()),
            // Validation refused bytes that are not base64.
            (None, Some(bytes)) => data_source::Specifier::InlineBytes(bytes.decoded.clone()?),
            (None, None) => return None,
        };
        Some(DataSource {
            specifier: Some(specifier),
            ..DataSource::default()
        })
    });
    DirectResponseAction {
        status: direct.status,
        body,
        ..DirectResponseAction::default()
    }
}

type WeightedDestination<'a> = (&'a Destination, u32, Option<&'a Headers>);

/// A forwarding action to `destinations` (resolved in namespace `vs_namespace`).
pub fn forward(
    scope: &Scope,
    http: &HttpRoute,
    destinations: &[WeightedDestination],
    vs_namespace: &str,
    port: u32,
) -> RouteAction {
    let cluster = |d: &Destination| cluster_name(scope, d, vs_namespace, port);
    let cluster_specifier = match destinations {
        [(only, _, None)] => route_action::ClusterSpecifier::Cluster(cluster(only)),
        _ => route_action::ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: destinations
                .iter()
                .map(|(d, weight, headers)| {
                    let mut weighted = ClusterWeight {
                        name: cluster(d),
                        weight: u32_value(*weight),
                        ..ClusterWeight::default()
                    };
                    if let Some(Headers { request, response }) = headers {
                        let (add, remove) = header_ops(request.as_ref());
                        weighted.request_headers_to_add = add;
                        weighted.request_headers_to_remove = remove;
                        let (add, remove) = header_ops(response.as_ref());
                        weighted.response_headers_to_add = add;
                        weighted.response_headers_to_remove = remove;
                    }
                    weighted
                })
                .collect(),
            ..WeightedCluster::default()
        }),
    };
    let mut action = RouteAction {
        cluster_specifier: Some(cluster_specifier),
        // Istio disables Envoy's 15 s default: no timeout unless the route sets one.
        timeout: Some(duration(
            http.timeout
                .map_or(std::time::Duration::ZERO, |t| t.as_std()),
        )),
        ..RouteAction::default()
    };
    let mirror = |destination: &Destination, share: f64| RequestMirrorPolicy {
        cluster: cluster(destination),
        runtime_fraction: Some(RuntimeFractionalPercent {
            default_value: Some(percent(share)),
            runtime_key: String::new(),
        }),
        ..RequestMirrorPolicy::default()
    };
    if let Some(destination) = &http.mirror {
        let share = mirror_percentage(http);
        action
            .request_mirror_policies
            .push(mirror(destination, share));
    }
    for policy in &http.mirrors {
        let share = policy.percentage.map_or(100.0, |p| p.value);
        action
            .request_mirror_policies
            .push(mirror(&policy.destination, share));
    }
    if let Some(rewrite) = &http.rewrite {
        if let Some(uri) = &rewrite.uri {
            action.prefix_rewrite = uri.clone();
        }
        if let Some(regex) = &rewrite.uri_regex_rewrite {
            action.regex_rewrite = Some(RegexMatchAndSubstitute {
                pattern: Some(matching::regex(&regex.pattern)),
                substitution: regex.rewrite.clone(),
            });
        }
        if let Some(authority) = &rewrite.authority {
            action.host_rewrite_specifier = Some(
                route_action::HostRewriteSpecifier::HostRewriteLiteral(authority.clone()),
            );
        }
    }
    if let Some((first, _, _)) = destinations.first() {
        action.hash_policy = hash_policies(scope, first, vs_namespace, port);
    }
    action.retry_policy = retry_policy(http, !action.hash_policy.is_empty());
    action
}

/// The share of requests mirrored: `mirrorPercentage`, else the deprecated
/// `mirrorPercent`, else all.
fn mirror_percentage(http: &HttpRoute) -> f64 {
    match (http.mirror_percentage, http.mirror_percent) {
        (Some(p), _) => p.value,
        (None, Some(p)) => f64::from(p),
        (None, None) => 100.0,
    }
}

/// `outbound|PORT|SUBSET|HOST` (see [`destination_port`]).
pub(crate) fn cluster_name(
    scope: &Scope,
    d: &Destination,
    vs_namespace: &str,
    port: u32,
) -> String {
    let host = resolve_host(&d.host, vs_namespace, &scope.snapshot.domain);
    names::outbound_cluster(
        destination_port(scope, d, &host, port),
        d.subset.as_deref().unwrap_or(""),
        &host,
    )
}

/// The port a destination is reached on: its own, else its service's only port, else the
/// port the request came in on.
fn destination_port(scope: &Scope, d: &Destination, host: &str, request_port: u32) -> u32 {
    let service_port = d.port.map(|p| p.number).or_else(|| {
        let service = scope.snapshot.services.get(host)?;
        (service.ports.len() == 1).then(|| service.ports[0].port)
    });
    service_port.unwrap_or(request_port)
}

/// Istio's retry policy (`retry.ConvertPolicy`): a retry avoids the hosts tried before
/// unless `retryIgnorePreviousHosts` says otherwise or, by default, when requests are
/// `hashed` to hosts (a retry elsewhere would defeat the hashing).
fn retry_policy(http: &HttpRoute, hashed: bool) -> Option<RetryPolicy> {
    let (attempts, retry_on, per_try) = match &http.retries {
        Some(r) if r.attempts == 0 => return None,
        Some(r) => (
            r.attempts as u32,
            r.retry_on
                .clone()
                .unwrap_or_else(|| DEFAULT_RETRY_ON.to_string()),
            r.per_try_timeout,
        ),
        None => (DEFAULT_RETRIES, DEFAULT_RETRY_ON.to_string(), None),
    };
    // Numeric entries are status codes; Envoy takes them separately.
    let mut policies = Vec::new();
    let mut codes = Vec::new();
    for entry in retry_on.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match entry.parse::<u32>() {
            Ok(code) => codes.push(code),
            Err(_) => policies.push(entry.to_string()),
        }
    }
    if http.retries.as_ref().is_none_or(|r| r.retry_on.is_none()) {
        codes.push(503);
    }
    if !codes.is_empty() && !policies.iter().any(|p| p == "retriable-status-codes") {
        policies.push("retriable-status-codes".to_string());
    }
    let retries = http.retries.as_ref();
    let other_hosts = retries
        .and_then(|r| r.retry_ignore_previous_hosts)
        .unwrap_or(!hashed);
    let previous_hosts = retry_policy::RetryHostPredicate {
        name: "envoy.retry_host_predicates.previous_hosts".to_string(),
        config_type: Some(retry_policy::retry_host_predicate::ConfigType::TypedConfig(
            pack(PreviousHostsPredicate::default()),
        )),
    };
    Some(RetryPolicy {
        retry_on: policies.join(","),
        num_retries: u32_value(attempts),
        per_try_timeout: per_try.map(|t| duration(t.as_std())),
        retriable_status_codes: codes,
        retry_host_predicate: other_hosts.then_some(previous_hosts).into_iter().collect(),
        host_selection_retry_max_attempts: 5,
        retry_back_off: retries
            .and_then(|r| r.backoff)
            .map(|base| retry_policy::RetryBackOff {
                base_interval: Some(duration(base.as_std())),
                ..Default::default()
            }),
        ..RetryPolicy::default()
    })
}

/// The hash a consistent-hash load balancer of the destination's cluster (its subset and
/// port, merged as its cluster is) needs from each request.
fn hash_policies(scope: &Scope, d: &Destination, vs_namespace: &str, port: u32) -> Vec<HashPolicy> {
    let host = resolve_host(&d.host, vs_namespace, &scope.snapshot.domain);
    let Some(rule) =
        scope
            .snapshot
            .destination_rule(&host, &scope.proxy.namespace, &scope.proxy.labels)
    else {
        return vec![];
    };
    let port = destination_port(scope, d, &host, port);
    let settings = PortSettings::of_subset(Some(&rule.spec), d.subset.as_deref(), port);
    let Some(hash) = settings
        .load_balancer
        .and_then(|lb| lb.consistent_hash.as_ref())
    else {
        return vec![];
    };
    let policy = if let Some(header) = &hash.http_header_name {
        hash_policy::PolicySpecifier::Header(hash_policy::Header {
            header_name: header.clone(),
            ..Default::default()
        })
    } else if let Some(cookie) = &hash.http_cookie {
        hash_policy::PolicySpecifier::Cookie(hash_policy::Cookie {
            name: cookie.name.clone(),
            path: cookie.path.clone().unwrap_or_default(),
            ttl: cookie.ttl.map(|t| duration(t.as_std())),
            attributes: cookie
                .attributes
                .iter()
                .map(|a| hash_policy::CookieAttribute {
                    name: a.name.clone(),
                    value: a.value.clone().unwrap_or_default(),
                })
                .collect(),
        })
    } else if let Some(name) = &hash.http_query_parameter_name {
        hash_policy::PolicySpecifier::QueryParameter(hash_policy::QueryParameter {
            name: name.clone(),
        })
    } else {
        hash_policy::PolicySpecifier::ConnectionProperties(hash_policy::ConnectionProperties {
            source_ip: true,
        })
    };
    vec![HashPolicy {
        policy_specifier: Some(policy),
        terminal: false,
    }]
}

fn apply_headers(route: &mut Route, headers: &Headers) {
    let (add, remove) = header_ops(headers.request.as_ref());
    route.request_headers_to_add = add;
    route.request_headers_to_remove = remove;
    let (add, remove) = header_ops(headers.response.as_ref());
    route.response_headers_to_add = add;
    route.response_headers_to_remove = remove;
}

fn header_ops(ops: Option<&HeaderOperations>) -> (Vec<HeaderValueOption>, Vec<String>) {
    let Some(ops) = ops else {
        return (vec![], vec![]);
    };
    let option = |key: &str, value: &str, action: HeaderAppendAction| HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_ascii_lowercase(),
            value: value.to_string(),
            ..HeaderValue::default()
        }),
        append_action: action as i32,
        ..HeaderValueOption::default()
    };
    let add = ops
        .set
        .iter()
        .map(|(k, v)| option(k, v, HeaderAppendAction::OverwriteIfExistsOrAdd))
        .chain(
            ops.add
                .iter()
                .map(|(k, v)| option(k, v, HeaderAppendAction::AppendIfExistsOrAdd)),
        )
        .collect();
    (
        add,
        ops.remove.iter().map(|h| h.to_ascii_lowercase()).collect(),
    )
}

/// The HTTP filters every HCM carries: CORS and fault (inert unless a route configures
/// them), then the router.
pub fn http_filters() -> Vec<
    envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter,
> {
    use envoy_types::pb::envoy::extensions::filters::http::cors::v3::Cors;
    use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
        HttpFilter, http_filter,
    };
    let filter = |name: &str, config| HttpFilter {
        name: name.to_string(),
        config_type: Some(http_filter::ConfigType::TypedConfig(config)),
        ..HttpFilter::default()
    };
    vec![
        filter(CORS_FILTER, pack(Cors::default())),
        filter(FAULT_FILTER, pack(HttpFault::default())),
        filter("envoy.filters.http.router", pack(Router::default())),
    ]
}
