use super::common::*;
use crate::networking::*;

const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

pub fn validate(spec: &VirtualServiceSpec, errors: &mut Errors) {
    if spec.hosts.is_empty() {
        errors.push("spec.hosts", "a VirtualService needs at least one host");
    }
    for (i, host) in spec.hosts.iter().enumerate() {
        check_host(
            &format!("spec.hosts[{i}]"),
            host,
            !spec.gateways.is_empty(),
            errors,
        );
    }
    if spec.http.is_empty() && spec.tcp.is_empty() && spec.tls.is_empty() {
        errors.push(
            "spec",
            "a VirtualService needs at least one http, tcp or tls route",
        );
    }
    for (i, route) in spec.http.iter().enumerate() {
        validate_http_route(&format!("spec.http[{i}]"), route, errors);
    }
    for (i, route) in spec.tcp.iter().enumerate() {
        let at = format!("spec.tcp[{i}]");
        for (j, m) in route.matches.iter().enumerate() {
            if let Some(port) = m.port {
                check_port(&format!("{at}.match[{j}].port"), port, errors);
            }
            check_no_subnets(&format!("{at}.match[{j}]"), &m.destination_subnets, errors);
        }
        check_l4_destinations(&at, &route.route, errors);
    }
    for (i, route) in spec.tls.iter().enumerate() {
        let at = format!("spec.tls[{i}]");
        if route.matches.is_empty() {
            errors.push(
                format!("{at}.match"),
                "a tls route needs at least one match",
            );
        }
        for (j, m) in route.matches.iter().enumerate() {
            check_no_subnets(&format!("{at}.match[{j}]"), &m.destination_subnets, errors);
            if m.sni_hosts.is_empty() {
                errors.push(
                    format!("{at}.match[{j}].sniHosts"),
                    "a tls match needs sniHosts",
                );
            }
            for (k, sni) in m.sni_hosts.iter().enumerate() {
                let field = format!("{at}.match[{j}].sniHosts[{k}]");
                check_host(&field, sni, true, errors);
                if !spec.hosts.iter().any(|h| covers(h, sni)) {
                    errors.push(
                        field,
                        format!("{sni:?} is not among the VirtualService's hosts"),
                    );
                }
            }
        }
        check_l4_destinations(&at, &route.route, errors);
    }
    check_export_to(&spec.export_to, errors);
}

/// Matching on the connection's destination address is not applied yet: said so
/// rather than ignored (the route would match more than written).
fn check_no_subnets(at: &str, subnets: &[String], errors: &mut Errors) {
    if !subnets.is_empty() {
        errors.push(
            format!("{at}.destinationSubnets"),
            "not supported by this meshd yet",
        );
    }
}

/// Whether host `pattern` (`*`, `*.example.com` or a name) covers `name` (itself
/// possibly a wildcard).
fn covers(pattern: &str, name: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some(suffix) => name.len() > suffix.len() && name.ends_with(suffix),
        None => pattern == name,
    }
}

/// Istio's limit on a direct response's body (Envoy's own default is 4 KiB; the route
/// configuration raises it to this).
pub const MAX_DIRECT_RESPONSE_BODY: usize = 1024 * 1024;

fn validate_http_route(at: &str, route: &HttpRoute, errors: &mut Errors) {
    let actions = [
        ("route", !route.route.is_empty()),
        ("redirect", route.redirect.is_some()),
        ("directResponse", route.direct_response.is_some()),
    ];
    let given: Vec<&str> = actions
        .iter()
        .filter(|(_, on)| *on)
        .map(|(a, _)| *a)
        .collect();
    match given.as_slice() {
        [] => errors.push(
            format!("{at}.route"),
            "an http route needs a route, a redirect or a directResponse",
        ),
        [_] => {}
        [_, second, ..] => errors.push(
            format!("{at}.{second}"),
            format!("{} are mutually exclusive", given.join(", ")),
        ),
    }
    if let Some(direct) = &route.direct_response {
        validate_direct_response(&format!("{at}.directResponse"), direct, errors);
    }
    if route.redirect.is_some() && route.rewrite.is_some() {
        errors.push(
            format!("{at}.rewrite"),
            "rewrite and redirect are mutually exclusive",
        );
    }
    for (j, m) in route.matches.iter().enumerate() {
        validate_match(&format!("{at}.match[{j}]"), m, errors);
    }
    validate_destinations(at, &route.route, errors);
    if let Some(redirect) = &route.redirect {
        validate_redirect(&format!("{at}.redirect"), redirect, errors);
    }
    if let Some(retries) = &route.retries {
        validate_retries(&format!("{at}.retries"), retries, errors);
    }
    if let Some(fault) = &route.fault {
        validate_fault(&format!("{at}.fault"), fault, errors);
    }
    if let Some(mirror) = &route.mirror {
        check_destination(&format!("{at}.mirror"), mirror, errors);
        if !route.mirrors.is_empty() {
            errors.push(format!("{at}.mirrors"), "give mirror or mirrors, not both");
        }
    }
    for (j, mirror) in route.mirrors.iter().enumerate() {
        check_destination(
            &format!("{at}.mirrors[{j}].destination"),
            &mirror.destination,
            errors,
        );
        if let Some(p) = mirror.percentage {
            check_percent(
                &format!("{at}.mirrors[{j}].percentage.value"),
                p.value,
                errors,
            );
        }
    }
    if let Some(rewrite) = &route.rewrite {
        validate_rewrite(&format!("{at}.rewrite"), rewrite, errors);
    }
    if let Some(p) = route.mirror_percentage {
        check_percent(&format!("{at}.mirrorPercentage.value"), p.value, errors);
    }
    if let Some(p) = route.mirror_percent {
        check_percent(&format!("{at}.mirrorPercent"), f64::from(p), errors);
    }
    if let Some(headers) = &route.headers {
        check_headers(&format!("{at}.headers"), headers, errors);
    }
    if let Some(cors) = &route.cors_policy {
        validate_cors(&format!("{at}.corsPolicy"), cors, errors);
    }
}

fn validate_match(at: &str, m: &HttpMatchRequest, errors: &mut Errors) {
    for (name, value) in [
        ("uri", &m.uri),
        ("scheme", &m.scheme),
        ("method", &m.method),
        ("authority", &m.authority),
    ] {
        if let Some(value) = value {
            check_string_match(&format!("{at}.{name}"), value, errors);
        }
    }
    if let Some(crate::StringMatch::Prefix(p) | crate::StringMatch::Exact(p)) = &m.uri
        && !p.starts_with('/')
    {
        errors.push(format!("{at}.uri"), format!("{p:?} must start with \"/\""));
    }
    for (name, value) in &m.headers {
        if name.starts_with("@request.auth.claims") {
            errors.push(
                format!("{at}.headers.{name}"),
                "matching JWT claims in routes is not supported by this meshd yet (match them in an AuthorizationPolicy's when: request.auth.claims[...])",
            );
            continue;
        }
        // Header names are case-insensitive; the route matches their lower-case form.
        check_header_name(
            &format!("{at}.headers.{name}"),
            &name.to_ascii_lowercase(),
            errors,
        );
        check_string_match(&format!("{at}.headers.{name}"), value, errors);
    }
    for (name, value) in &m.without_headers {
        check_header_name(
            &format!("{at}.withoutHeaders.{name}"),
            &name.to_ascii_lowercase(),
            errors,
        );
        check_string_match(&format!("{at}.withoutHeaders.{name}"), value, errors);
    }
    for (name, value) in &m.query_params {
        check_string_match(&format!("{at}.queryParams.{name}"), value, errors);
    }
    if let Some(port) = m.port {
        check_port(&format!("{at}.port"), port, errors);
    }
}

/// Istio's rules: a prefix (`uri`) or a regex rewrite, not both; a regex rewrite names
/// both its pattern (RE2) and its replacement.
fn validate_rewrite(at: &str, rewrite: &HttpRewrite, errors: &mut Errors) {
    let Some(regex) = &rewrite.uri_regex_rewrite else {
        return;
    };
    if rewrite.uri.is_some() {
        errors.push(
            format!("{at}.uriRegexRewrite"),
            "give uri or uriRegexRewrite, not both",
        );
    }
    if regex.pattern.is_empty() || regex.rewrite.is_empty() {
        errors.push(
            format!("{at}.uriRegexRewrite"),
            "match and rewrite are both required",
        );
    } else {
        check_regex(
            &format!("{at}.uriRegexRewrite.match"),
            &regex.pattern,
            errors,
        );
    }
}

fn check_destination(at: &str, destination: &Destination, errors: &mut Errors) {
    if destination.host.is_empty() {
        errors.push(format!("{at}.host"), "host is required");
    } else {
        check_host(&format!("{at}.host"), &destination.host, false, errors);
    }
    if let Some(subset) = &destination.subset
        && !is_dns1123_label(subset)
    {
        errors.push(
            format!("{at}.subset"),
            format!("{subset:?} is not a valid subset name"),
        );
    }
    if let Some(port) = destination.port {
        check_port(&format!("{at}.port.number"), port.number, errors);
    }
}

fn check_l4_destinations(at: &str, route: &[RouteDestination], errors: &mut Errors) {
    if route.is_empty() {
        errors.push(
            format!("{at}.route"),
            "a route needs at least one destination",
        );
    }
    for (j, d) in route.iter().enumerate() {
        check_destination(
            &format!("{at}.route[{j}].destination"),
            &d.destination,
            errors,
        );
    }
    let weights: Vec<Option<i64>> = route.iter().map(|d| d.weight).collect();
    check_weights(at, &weights, errors);
}

/// Istio's rules for the weights of a route's destinations: none negative and, for
/// several, not all 0. They need not sum to 100: each gets its share of the sum. (The
/// sum must fit Envoy's 32 bits.)
fn check_weights(at: &str, weights: &[Option<i64>], errors: &mut Errors) {
    for (j, weight) in weights.iter().enumerate() {
        if weight.is_some_and(|w| w < 0) {
            errors.push(
                format!("{at}.route[{j}].weight"),
                "weight cannot be negative",
            );
        }
    }
    let sum: i64 = weights.iter().map(|w| w.unwrap_or(0).max(0)).sum();
    if weights.len() > 1 && sum == 0 {
        errors.push(
            format!("{at}.route"),
            "the weights of several destinations cannot all be 0",
        );
    }
    if sum > i64::from(u32::MAX) {
        errors.push(
            format!("{at}.route"),
            format!("the weights sum to {sum}, above {}", u32::MAX),
        );
    }
}

fn check_headers(at: &str, headers: &Headers, errors: &mut Errors) {
    for (side, ops) in [
        ("request", &headers.request),
        ("response", &headers.response),
    ] {
        let Some(ops) = ops else { continue };
        let names = ops
            .set
            .keys()
            .chain(ops.add.keys())
            .chain(ops.remove.iter());
        for name in names {
            let lower = name.to_ascii_lowercase();
            check_header_name(&format!("{at}.{side}"), &lower, errors);
            if lower.starts_with(':') || lower == "host" {
                errors.push(
                    format!("{at}.{side}"),
                    format!("header {name:?} cannot be modified"),
                );
            }
        }
    }
}

/// A route's destinations: each valid, with weights as [`check_weights`] wants them.
fn validate_destinations(at: &str, destinations: &[HttpRouteDestination], errors: &mut Errors) {
    let weights: Vec<Option<i64>> = destinations.iter().map(|d| d.weight).collect();
    for (j, destination) in destinations.iter().enumerate() {
        let d_at = format!("{at}.route[{j}]");
        check_destination(
            &format!("{d_at}.destination"),
            &destination.destination,
            errors,
        );
        if let Some(headers) = &destination.headers {
            check_headers(&format!("{d_at}.headers"), headers, errors);
        }
    }
    check_weights(at, &weights, errors);
}

fn validate_redirect(at: &str, redirect: &HttpRedirect, errors: &mut Errors) {
    if let Some(code) = redirect.redirect_code
        && !matches!(code, 301 | 302 | 303 | 307 | 308)
    {
        errors.push(
            format!("{at}.redirectCode"),
            "redirectCode must be 301, 302, 303, 307 or 308",
        );
    }
    if let Some(port) = redirect.port {
        check_port(&format!("{at}.port"), port, errors);
    }
    if redirect.port.is_some() && redirect.derive_port.is_some() {
        errors.push(
            format!("{at}.derivePort"),
            "port and derivePort are mutually exclusive",
        );
    }
    if redirect.uri.is_none()
        && redirect.prefix_rewrite.is_none()
        && redirect.authority.is_none()
        && redirect.port.is_none()
        && redirect.derive_port.is_none()
        && redirect.scheme.is_none()
    {
        errors.push(
            at.to_string(),
            "a redirect needs uri, prefixRewrite, authority, port, derivePort or scheme",
        );
    }
}

fn validate_direct_response(at: &str, direct: &HttpDirectResponse, errors: &mut Errors) {
    if !(200..=599).contains(&direct.status) {
        errors.push(
            format!("{at}.status"),
            "status must be an HTTP status from 200 to 599",
        );
    }
    let Some(body) = &direct.body else { return };
    let size = match (&body.string, &body.bytes) {
        (Some(_), Some(_)) => {
            errors.push(
                format!("{at}.body"),
                "string and bytes are mutually exclusive",
            );
            return;
        }
        (Some(text), None) => text.len(),
        (None, Some(bytes)) => match &bytes.decoded {
            Some(decoded) => decoded.len(),
            None => {
                errors.push(
                    format!("{at}.body.bytes"),
                    "not base64 (standard alphabet, padded)",
                );
                return;
            }
        },
        (None, None) => 0,
    };
    if size > MAX_DIRECT_RESPONSE_BODY {
        errors.push(
            format!("{at}.body"),
            format!("{size} bytes; a direct response's body is at most 1 MiB"),
        );
    }
}

fn validate_retries(at: &str, retries: &HttpRetry, errors: &mut Errors) {
    if retries.attempts < 0 {
        errors.push(format!("{at}.attempts"), "attempts cannot be negative");
    }
    if retries
        .per_try_timeout
        .is_some_and(|t| t.as_std() < std::time::Duration::from_millis(1))
    {
        errors.push(
            format!("{at}.perTryTimeout"),
            "perTryTimeout must be at least 1ms",
        );
    }
    if retries
        .backoff
        .is_some_and(|t| t.as_std() < std::time::Duration::from_millis(1))
    {
        errors.push(format!("{at}.backoff"), "backoff must be at least 1ms");
    }
    for policy in retries
        .retry_on
        .iter()
        .flat_map(|r| r.split(','))
        .map(str::trim)
    {
        if !RETRY_ON.contains(&policy) && policy.parse::<u16>().is_err() {
            errors.push(
                format!("{at}.retryOn"),
                format!("unknown retry policy {policy:?}"),
            );
        }
    }
}

fn validate_fault(at: &str, fault: &HttpFaultInjection, errors: &mut Errors) {
    if fault.delay.is_none() && fault.abort.is_none() {
        errors.push(at.to_string(), "a fault needs a delay or an abort");
    }
    if let Some(delay) = &fault.delay {
        if delay.fixed_delay.is_none() {
            errors.push(format!("{at}.delay.fixedDelay"), "fixedDelay is required");
        }
        if let Some(p) = delay.percentage {
            check_percent(&format!("{at}.delay.percentage.value"), p.value, errors);
        }
        if let Some(p) = delay.percent {
            check_percent(&format!("{at}.delay.percent"), f64::from(p), errors);
        }
    }
    if let Some(abort) = &fault.abort {
        match (abort.http_status, &abort.grpc_status) {
            (Some(status), None) if (200..=599).contains(&status) => {}
            (Some(_), None) => errors.push(
                format!("{at}.abort.httpStatus"),
                "httpStatus must be in 200..=599",
            ),
            (None, Some(name)) if GRPC_STATUS.iter().any(|(known, _)| known == name) => {}
            (None, Some(name)) => errors.push(
                format!("{at}.abort.grpcStatus"),
                format!("{name:?} is not a gRPC status (UNAVAILABLE, NOT_FOUND, ...)"),
            ),
            (Some(_), Some(_)) => errors.push(
                format!("{at}.abort"),
                "give httpStatus or grpcStatus, not both",
            ),
            (None, None) => errors.push(
                format!("{at}.abort.httpStatus"),
                "httpStatus (or grpcStatus) is required",
            ),
        }
        if let Some(p) = abort.percentage {
            check_percent(&format!("{at}.abort.percentage.value"), p.value, errors);
        }
    }
}

fn validate_cors(at: &str, cors: &CorsPolicy, errors: &mut Errors) {
    for (k, origin) in cors.allow_origins.iter().enumerate() {
        check_string_match(&format!("{at}.allowOrigins[{k}]"), origin, errors);
    }
    for (k, method) in cors.allow_methods.iter().enumerate() {
        if !matches!(
            method.as_str(),
            "GET"
                | "HEAD"
                | "POST"
                | "PUT"
                | "DELETE"
                | "CONNECT"
                | "OPTIONS"
                | "TRACE"
                | "PATCH"
                | "*"
        ) {
            errors.push(
                format!("{at}.allowMethods[{k}]"),
                format!("{method:?} is not an HTTP method"),
            );
        }
    }
}
