//! HTTPMatchRequest → Envoy RouteMatch.

use crate::scope::Scope;
use envoy_types::pb::envoy::config::route::v3::{
    HeaderMatcher, QueryParameterMatcher, RouteMatch, header_matcher, query_parameter_matcher,
    route_match,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{RegexMatcher, StringMatcher, string_matcher};
use envoy_types::pb::google::protobuf::BoolValue;
use fleetmesh_api::StringMatch;
use fleetmesh_api::networking::{HttpMatchRequest, HttpRoute};
use fleetmesh_model::service::labels_match;

/// The Envoy matches for `http` on this proxy and port, each with the match it came from
/// (none for the catch-all of a route without matches); `None` when the route has
/// matches but none applies here (other port, other source labels, other gateway).
pub fn applicable<'a>(
    scope: &Scope,
    http: &'a HttpRoute,
    port: u32,
    gateway: &str,
) -> Option<Vec<(RouteMatch, Option<&'a HttpMatchRequest>)>> {
    if http.matches.is_empty() {
        return Some(vec![(catch_all(), None)]);
    }
    let matches: Vec<_> = http
        .matches
        .iter()
        .filter(|m| m.port.is_none_or(|p| p == port))
        .filter(|m| labels_match(&m.source_labels, &scope.proxy.labels))
        .filter(|m| {
            m.source_namespace
                .as_ref()
                .is_none_or(|ns| *ns == scope.proxy.namespace)
        })
        .filter(|m| {
            m.gateways.is_empty()
                || m.gateways
                    .iter()
                    .any(|g| g == gateway || g.ends_with(&format!("/{gateway}")))
        })
        .map(|m| (translate(m), Some(m)))
        .collect();
    if matches.is_empty() {
        None
    } else {
        Some(matches)
    }
}

fn catch_all() -> RouteMatch {
    RouteMatch {
        path_specifier: Some(route_match::PathSpecifier::Prefix("/".to_string())),
        ..RouteMatch::default()
    }
}

fn translate(m: &HttpMatchRequest) -> RouteMatch {
    let path_specifier = Some(match &m.uri {
        None => route_match::PathSpecifier::Prefix("/".to_string()),
        Some(StringMatch::Exact(p)) => route_match::PathSpecifier::Path(p.clone()),
        Some(StringMatch::Prefix(p)) => route_match::PathSpecifier::Prefix(p.clone()),
        Some(StringMatch::Regex(r)) => route_match::PathSpecifier::SafeRegex(regex(r)),
    });
    let mut headers: Vec<HeaderMatcher> = m
        .headers
        .iter()
        .map(|(name, value)| header(&name.to_ascii_lowercase(), value))
        .collect();
    headers.extend(m.without_headers.iter().map(|(name, value)| HeaderMatcher {
        invert_match: true,
        // A request without the header does not carry the value: the route takes it.
        treat_missing_header_as_empty: !is_presence(value),
        ..header(&name.to_ascii_lowercase(), value)
    }));
    for (pseudo, value) in [
        (":method", &m.method),
        (":authority", &m.authority),
        (":scheme", &m.scheme),
    ] {
        if let Some(value) = value {
            headers.push(header(pseudo, value));
        }
    }
    let query_parameters = m
        .query_params
        .iter()
        .map(|(name, value)| QueryParameterMatcher {
            name: name.clone(),
            query_parameter_match_specifier: Some(if is_presence(value) {
                query_parameter_matcher::QueryParameterMatchSpecifier::PresentMatch(true)
            } else {
                query_parameter_matcher::QueryParameterMatchSpecifier::StringMatch(string(value))
            }),
        })
        .collect();
    RouteMatch {
        path_specifier,
        case_sensitive: m.ignore_uri_case.then_some(BoolValue { value: false }),
        headers,
        query_parameters,
        ..RouteMatch::default()
    }
}

/// `prefix: ""`: Istio's way to ask only that a header or parameter be there (Envoy
/// refuses an empty prefix, so it becomes a presence match, as istiod makes it).
fn is_presence(value: &StringMatch) -> bool {
    matches!(value, StringMatch::Prefix(p) if p.is_empty())
}

fn header(name: &str, value: &StringMatch) -> HeaderMatcher {
    let specifier = if is_presence(value) {
        header_matcher::HeaderMatchSpecifier::PresentMatch(true)
    } else {
        header_matcher::HeaderMatchSpecifier::StringMatch(string(value))
    };
    HeaderMatcher {
        name: name.to_string(),
        header_match_specifier: Some(specifier),
        ..HeaderMatcher::default()
    }
}

pub fn string(value: &StringMatch) -> StringMatcher {
    let pattern = match value {
        StringMatch::Exact(s) => string_matcher::MatchPattern::Exact(s.clone()),
        StringMatch::Prefix(s) => string_matcher::MatchPattern::Prefix(s.clone()),
        StringMatch::Regex(r) => string_matcher::MatchPattern::SafeRegex(regex(r)),
    };
    StringMatcher {
        match_pattern: Some(pattern),
        ..StringMatcher::default()
    }
}

pub fn regex(pattern: &str) -> RegexMatcher {
    RegexMatcher {
        regex: pattern.to_string(),
        ..RegexMatcher::default()
    }
}
