//! AuthorizationPolicy → Envoy's RBAC HTTP filter on a workload's inbound side, as Istio
//! evaluates it: AUDIT only logs, then any matching DENY rule denies, then — when any
//! ALLOW policy applies — only a request matching an ALLOW rule passes. An ALLOW policy
//! without rules allows nothing; `rules: [{}]` matches everything.
//!
//! Connections that are not HTTP (a port no service declares) get the RBAC *network*
//! filter, with Istio's rule for fields only HTTP has (hosts, methods, paths, request
//! principals, request headers and claims): an ALLOW rule using one matches nothing, a
//! DENY rule ignores it (so it denies more), an AUDIT rule is left out.

use envoy_types::pb::envoy::config::core::v3::CidrRange;
use envoy_types::pb::envoy::config::listener::v3::{Filter, filter};
use envoy_types::pb::envoy::config::rbac::v3::{
    MetadataSource, Permission, Policy, Principal, Rbac, SourcedMetadata, permission, principal,
    rbac,
};
use envoy_types::pb::envoy::config::route::v3::{HeaderMatcher, header_matcher};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpFilter, http_filter,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    ListMatcher, MetadataMatcher, PathMatcher, RegexMatcher, StringMatcher, ValueMatcher,
    list_matcher, metadata_matcher, path_matcher, string_matcher, value_matcher,
};
use envoy_types::pb::google::protobuf::{Any, UInt32Value};
use fleetmesh_api::resource::Config;
use fleetmesh_api::security::{
    Action, AuthorizationPolicySpec, Condition, Operation, Rule, Source,
};
use fleetmesh_api::validate::security::{ConditionKey, condition_key, parse_cidr};
use std::borrow::Cow;
use std::collections::BTreeMap;

const RBAC_FILTER: &str = "envoy.filters.http.rbac";
const RBAC_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC";
const NETWORK_RBAC_FILTER: &str = "envoy.filters.network.rbac";
const NETWORK_RBAC_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC";

/// The RBAC filters for policies that apply to a workload, in evaluation order.
pub fn http_filters(policies: &[&Config<AuthorizationPolicySpec>]) -> Vec<HttpFilter> {
    rule_sets(policies, |_, rule| Some(Cow::Borrowed(rule)))
        .into_iter()
        .map(|(action, rules)| HttpFilter {
            name: RBAC_FILTER.into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(rbac_config(
                action, &rules,
            ))),
            ..HttpFilter::default()
        })
        .collect()
}

/// The RBAC network filters for plain TCP connections, in evaluation order; `stat_prefix`
/// names their statistics.
pub fn network_filters(
    policies: &[&Config<AuthorizationPolicySpec>],
    stat_prefix: &str,
) -> Vec<Filter> {
    rule_sets(policies, tcp_rule)
        .into_iter()
        .filter(|(action, _)| *action != rbac::Action::Log)
        .map(|(action, rules)| {
            let mut config = rbac_config(action, &rules);
            // network RBAC: `rules` (1) as the HTTP filter has, plus `stat_prefix` (3).
            prost::encoding::string::encode(3, &stat_prefix.to_string(), &mut config.value);
            config.type_url = NETWORK_RBAC_TYPE.into();
            Filter {
                name: NETWORK_RBAC_FILTER.into(),
                config_type: Some(filter::ConfigType::TypedConfig(config)),
            }
        })
        .collect()
}

/// Per action that some policy has (AUDIT, DENY, ALLOW: evaluation order), its rules as
/// Envoy policies by name. `adapt` turns each rule into what is enforced (`None`: the rule
/// can never match); an action keeps its filter even when no rule is left, since an
/// ALLOW filter without policies denies everything, as Istio's does.
fn rule_sets<'a>(
    policies: &[&'a Config<AuthorizationPolicySpec>],
    adapt: impl Fn(Action, &'a Rule) -> Option<Cow<'a, Rule>>,
) -> Vec<(rbac::Action, BTreeMap<String, Policy>)> {
    let mut sets = Vec::new();
    for (action, envoy_action) in [
        (Action::Audit, rbac::Action::Log),
        (Action::Deny, rbac::Action::Deny),
        (Action::Allow, rbac::Action::Allow),
    ] {
        let applying: Vec<_> = policies
            .iter()
            .filter(|p| p.spec.action == action)
            .collect();
        if applying.is_empty() {
            continue;
        }
        let mut envoy_policies = BTreeMap::new();
        for policy in applying {
            for (i, rule) in policy.spec.rules.iter().flatten().enumerate() {
                let name = format!(
                    "ns[{}]-policy[{}]-rule[{i}]",
                    policy.metadata.namespace, policy.metadata.name
                );
                if let Some(enforced) = adapt(action, rule) {
                    envoy_policies
                        .insert(name, translate_rule(&enforced, &policy.metadata.namespace));
                }
            }
        }
        sets.push((envoy_action, envoy_policies));
    }
    sets
}

/// What a rule means for a plain TCP connection (Istio's rule for HTTP-only fields): a
/// rule without them as it is; with them, a DENY rule without those fields (it denies
/// more), and nothing for ALLOW and AUDIT (they can match no TCP connection).
fn tcp_rule(action: Action, rule: &Rule) -> Option<Cow<'_, Rule>> {
    let tcp = without_http_fields(rule);
    if tcp == *rule {
        return Some(Cow::Borrowed(rule));
    }
    (action == Action::Deny).then_some(Cow::Owned(tcp))
}

/// `rule` without the fields only an HTTP request has: hosts, methods, paths, request
/// principals, and conditions on request headers, principals and claims.
fn without_http_fields(rule: &Rule) -> Rule {
    let mut rule = rule.clone();
    for to in &mut rule.to {
        let op = &mut to.operation;
        for field in [
            &mut op.hosts,
            &mut op.not_hosts,
            &mut op.methods,
            &mut op.not_methods,
            &mut op.paths,
            &mut op.not_paths,
        ] {
            field.clear();
        }
    }
    for from in &mut rule.from {
        from.source.request_principals.clear();
        from.source.not_request_principals.clear();
    }
    rule.when.retain(|c| {
        !matches!(
            condition_key(&c.key),
            Ok(ConditionKey::RequestHeader(_)
                | ConditionKey::RequestPrincipal
                | ConditionKey::RequestClaim(_))
        )
    });
    rule
}

/// The filter's config, its policies in name order (see [`crate::sorted_map`]).
fn rbac_config(action: rbac::Action, policies: &BTreeMap<String, Policy>) -> Any {
    let rules = crate::sorted_map::encode(
        &Rbac {
            action: action as i32,
            ..Rbac::default()
        },
        2, // Rbac.policies
        policies,
    );
    let mut filter = Vec::new();
    prost::encoding::bytes::encode(1, &rules, &mut filter); // RBAC.rules
    Any {
        type_url: RBAC_TYPE.into(),
        value: filter,
    }
}

/// A rule matches when its `from`, `to` and `when` all match. `namespace` is the policy's:
/// a service account named without one is in it.
fn translate_rule(rule: &Rule, namespace: &str) -> Policy {
    let mut permissions: Vec<Permission> = Vec::new();
    let mut principals: Vec<Principal> = Vec::new();
    if !rule.to.is_empty() {
        permissions.push(Permission::either(
            rule.to.iter().map(|t| operation(&t.operation)).collect(),
        ));
    }
    if !rule.from.is_empty() {
        principals.push(Principal::either(
            rule.from
                .iter()
                .map(|f| source(&f.source, namespace))
                .collect(),
        ));
    }
    for condition in &rule.when {
        match condition_side(condition) {
            Side::Permission(p) => permissions.push(p),
            Side::Principal(p) => principals.push(p),
        }
    }
    Policy {
        permissions: vec![Permission::all(permissions)],
        principals: vec![Principal::all(principals)],
        ..Policy::default()
    }
}

/// One field of an operation or source: its values (any may match), whether it is a
/// `not*` field, and how a value becomes a matcher.
type Field<'a, T> = (&'a [String], bool, &'a dyn Fn(&str) -> T);

/// Every present field must match.
fn all_fields<T: Matcher>(fields: &[Field<'_, T>]) -> T {
    let mut all = Vec::new();
    for (values, negated, make) in fields {
        if values.is_empty() {
            continue;
        }
        let any_of = T::either(values.iter().map(|v| make(v)).collect());
        all.push(if *negated { any_of.not() } else { any_of });
    }
    T::all(all)
}

fn operation(op: &Operation) -> Permission {
    all_fields::<Permission>(&[
        (&op.hosts, false, &host_permission),
        (&op.not_hosts, true, &host_permission),
        (&op.methods, false, &method_permission),
        (&op.not_methods, true, &method_permission),
        (&op.paths, false, &path_permission),
        (&op.not_paths, true, &path_permission),
        (&op.ports, false, &port_permission),
        (&op.not_ports, true, &port_permission),
    ])
}

fn source(source: &Source, namespace: &str) -> Principal {
    let service_account = |account: &str| service_account_principal(namespace, account);
    all_fields::<Principal>(&[
        (&source.service_accounts, false, &service_account),
        (&source.not_service_accounts, true, &service_account),
        (&source.trust_domains, false, &trust_domain_principal),
        (&source.not_trust_domains, true, &trust_domain_principal),
        (&source.principals, false, &peer_principal),
        (&source.not_principals, true, &peer_principal),
        (&source.namespaces, false, &namespace_principal),
        (&source.not_namespaces, true, &namespace_principal),
        (&source.ip_blocks, false, &direct_ip_principal),
        (&source.not_ip_blocks, true, &direct_ip_principal),
        (&source.remote_ip_blocks, false, &remote_ip_principal),
        (&source.not_remote_ip_blocks, true, &remote_ip_principal),
        (&source.request_principals, false, &request_principal),
        (&source.not_request_principals, true, &request_principal),
    ])
}

enum Side {
    Permission(Permission),
    Principal(Principal),
}

/// `when`: destination facts are permissions, caller and request facts principals (as
/// Istio splits them). Keys were checked by validation.
fn condition_side(condition: &Condition) -> Side {
    let Ok(key) = condition_key(&condition.key) else {
        // Unreachable after validation; match nothing rather than everything.
        return Side::Principal(any_principal().not());
    };
    fn values<T: Matcher>(condition: &Condition, make: &dyn Fn(&str) -> T) -> T {
        let mut all = Vec::new();
        if !condition.values.is_empty() {
            all.push(T::either(
                condition.values.iter().map(|v| make(v)).collect(),
            ));
        }
        if !condition.not_values.is_empty() {
            all.push(T::either(condition.not_values.iter().map(|v| make(v)).collect()).not());
        }
        T::all(all)
    }
    let principal = |make: &dyn Fn(&str) -> Principal| Side::Principal(values(condition, make));
    let permission = |make: &dyn Fn(&str) -> Permission| Side::Permission(values(condition, make));
    match key {
        ConditionKey::RequestHeader(name) => principal(&|v| Principal {
            identifier: Some(principal::Identifier::Header(header(&name, v))),
        }),
        ConditionKey::SourceIp => principal(&direct_ip_principal),
        ConditionKey::RemoteIp => principal(&remote_ip_principal),
        ConditionKey::SourceNamespace => principal(&namespace_principal),
        ConditionKey::SourcePrincipal => principal(&peer_principal),
        ConditionKey::DestinationIp => permission(&|v| Permission {
            rule: cidr(v).map(permission::Rule::DestinationIp),
        }),
        ConditionKey::DestinationPort => permission(&port_permission),
        ConditionKey::ConnectionSni => permission(&|v| Permission {
            rule: Some(permission::Rule::RequestedServerName(string_match(v))),
        }),
        ConditionKey::RequestPrincipal => principal(&request_principal),
        ConditionKey::RequestClaim(claim) => principal(&|v| claim_principal(&claim, v)),
    }
}

/// Istio's value matching: `*` anything, `prefix*`, `*suffix`, else exact.
fn string_match(value: &str) -> StringMatcher {
    let pattern = if value == "*" {
        string_matcher::MatchPattern::SafeRegex(RegexMatcher {
            regex: ".*".into(),
            ..RegexMatcher::default()
        })
    } else if let Some(prefix) = value.strip_suffix('*') {
        string_matcher::MatchPattern::Prefix(prefix.into())
    } else if let Some(suffix) = value.strip_prefix('*') {
        string_matcher::MatchPattern::Suffix(suffix.into())
    } else {
        string_matcher::MatchPattern::Exact(value.into())
    };
    StringMatcher {
        match_pattern: Some(pattern),
        ..StringMatcher::default()
    }
}

fn header(name: &str, value: &str) -> HeaderMatcher {
    HeaderMatcher {
        name: name.into(),
        header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(
            string_match(value),
        )),
        ..HeaderMatcher::default()
    }
}

fn host_permission(host: &str) -> Permission {
    // Hosts compare without case, as DNS names do.
    let mut matcher = string_match(&host.to_ascii_lowercase());
    matcher.ignore_case = true;
    Permission {
        rule: Some(permission::Rule::Header(HeaderMatcher {
            name: ":authority".into(),
            header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(
                matcher,
            )),
            ..HeaderMatcher::default()
        })),
    }
}

fn method_permission(method: &str) -> Permission {
    Permission {
        rule: Some(permission::Rule::Header(header(":method", method))),
    }
}

fn path_permission(path: &str) -> Permission {
    Permission {
        rule: Some(permission::Rule::UrlPath(PathMatcher {
            rule: Some(path_matcher::Rule::Path(string_match(path))),
        })),
    }
}

fn port_permission(port: &str) -> Permission {
    Permission {
        rule: port
            .parse()
            .ok()
            .map(permission::Rule::DestinationPort)
            .or(Some(permission::Rule::NotRule(Box::new(any_permission())))),
    }
}

/// `cluster.local/ns/default/sa/sleep` (or with `*`) against the peer's SPIFFE id.
fn peer_principal(value: &str) -> Principal {
    let matcher = if value == "*" {
        // Any authenticated peer.
        string_match("*")
    } else if let Some(suffix) = value.strip_prefix('*') {
        string_match(&format!("*{suffix}"))
    } else {
        string_match(&format!("spiffe://{value}"))
    };
    authenticated(matcher)
}

/// A value in the validated JWT payload jwt_authn left in the request's metadata.
fn payload_matcher(claim: &str, value: ValueMatcher) -> Principal {
    Principal {
        identifier: Some(principal::Identifier::SourcedMetadata(SourcedMetadata {
            metadata_matcher: Some(MetadataMatcher {
                filter: crate::jwt::JWT_FILTER.into(),
                path: [crate::jwt::PAYLOAD_KEY, claim]
                    .iter()
                    .map(|key| metadata_matcher::PathSegment {
                        segment: Some(metadata_matcher::path_segment::Segment::Key(
                            key.to_string(),
                        )),
                    })
                    .collect(),
                value: Some(value),
                invert: false,
            }),
            // The request's dynamic metadata, where jwt_authn put the payload.
            metadata_source: MetadataSource::Dynamic as i32,
        })),
    }
}

fn string_value(value: &str) -> ValueMatcher {
    ValueMatcher {
        match_pattern: Some(value_matcher::MatchPattern::StringMatch(string_match(
            value,
        ))),
    }
}

/// `iss/sub` of the validated token (`*` for any token): the issuer is all before the
/// last `/`.
fn request_principal(value: &str) -> Principal {
    if value == "*" {
        return payload_matcher(
            "iss",
            ValueMatcher {
                match_pattern: Some(value_matcher::MatchPattern::PresentMatch(true)),
            },
        );
    }
    let (issuer, subject) = value.rsplit_once('/').unwrap_or((value, "*"));
    Principal::all(vec![
        payload_matcher("iss", string_value(issuer)),
        payload_matcher("sub", string_value(subject)),
    ])
}

/// A claim equal to `value`, or a list claim (e.g. groups) containing it.
fn claim_principal(claim: &str, value: &str) -> Principal {
    Principal::either(vec![
        payload_matcher(claim, string_value(value)),
        payload_matcher(
            claim,
            ValueMatcher {
                match_pattern: Some(value_matcher::MatchPattern::ListMatch(Box::new(
                    ListMatcher {
                        match_pattern: Some(list_matcher::MatchPattern::OneOf(Box::new(
                            string_value(value),
                        ))),
                    },
                ))),
            },
        ),
    ])
}

/// `NAME` (in `namespace`) or `NAMESPACE/NAME`: the peer's SPIFFE id has that namespace
/// and service account, whatever its trust domain (and any further segments), as Istio
/// matches it.
fn service_account_principal(namespace: &str, account: &str) -> Principal {
    let (namespace, name) = account.split_once('/').unwrap_or((namespace, account));
    authenticated(regex_matcher(format!(
        "spiffe://.+/ns/{}/(.+/|)sa/{}(/.+)?",
        regex_escape(namespace),
        regex_escape(name)
    )))
}

/// The trust domain of the peer's SPIFFE id: exact, `*` (any), or with a `*` at one end
/// standing for any characters but `/`.
fn trust_domain_principal(domain: &str) -> Principal {
    let prefix = |prefix: String| StringMatcher {
        match_pattern: Some(string_matcher::MatchPattern::Prefix(prefix)),
        ..StringMatcher::default()
    };
    authenticated(match domain.split_once('*') {
        None => prefix(format!("spiffe://{domain}/")),
        Some(("", "")) => prefix("spiffe://".into()),
        Some((before, after)) => regex_matcher(format!(
            "spiffe://{}[^/]*{}/.*",
            regex_escape(before),
            regex_escape(after)
        )),
    })
}

fn regex_matcher(regex: String) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(string_matcher::MatchPattern::SafeRegex(RegexMatcher {
            regex,
            ..RegexMatcher::default()
        })),
        ..StringMatcher::default()
    }
}

fn namespace_principal(namespace: &str) -> Principal {
    let pattern = match namespace {
        "*" => ".*/ns/.*/.*".to_string(),
        ns => format!(".*/ns/{}/.*", regex_escape(ns)),
    };
    authenticated(regex_matcher(pattern))
}

fn regex_escape(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let special = "\\.+*?()|[]{}^$".contains(c);
            special.then_some('\\').into_iter().chain([c])
        })
        .collect()
}

fn authenticated(principal_name: StringMatcher) -> Principal {
    Principal {
        identifier: Some(principal::Identifier::Authenticated(
            principal::Authenticated {
                principal_name: Some(principal_name),
            },
        )),
    }
}

fn cidr(text: &str) -> Option<CidrRange> {
    parse_cidr(text).map(|(address, prefix)| CidrRange {
        address_prefix: address.to_string(),
        prefix_len: Some(UInt32Value { value: prefix }),
    })
}

/// The peer's own address (`ipBlocks`, `source.ip`).
fn direct_ip_principal(block: &str) -> Principal {
    ip_principal(block, principal::Identifier::DirectRemoteIp)
}

/// The original client's address, as forwarded (`remoteIpBlocks`, `remote.ip`).
fn remote_ip_principal(block: &str) -> Principal {
    ip_principal(block, principal::Identifier::RemoteIp)
}

/// `block` as `address`; a block validation would have refused matches nothing.
fn ip_principal(block: &str, address: fn(CidrRange) -> principal::Identifier) -> Principal {
    match cidr(block) {
        Some(range) => Principal {
            identifier: Some(address(range)),
        },
        None => any_principal().not(),
    }
}

fn any_permission() -> Permission {
    Permission {
        rule: Some(permission::Rule::Any(true)),
    }
}

fn any_principal() -> Principal {
    Principal {
        identifier: Some(principal::Identifier::Any(true)),
    }
}

/// RBAC's two matcher trees (what is asked, who asks) combine alike.
trait Matcher: Sized {
    /// All of `items`; none at all matches everything.
    fn all(items: Vec<Self>) -> Self;
    /// Any of `items` (never empty).
    fn either(items: Vec<Self>) -> Self;
    fn not(self) -> Self;
}

impl Matcher for Permission {
    fn all(mut rules: Vec<Permission>) -> Permission {
        match rules.len() {
            0 => any_permission(),
            1 => rules.remove(0),
            _ => Permission {
                rule: Some(permission::Rule::AndRules(permission::Set { rules })),
            },
        }
    }

    fn either(mut rules: Vec<Permission>) -> Permission {
        if rules.len() == 1 {
            return rules.remove(0);
        }
        Permission {
            rule: Some(permission::Rule::OrRules(permission::Set { rules })),
        }
    }

    fn not(self) -> Permission {
        Permission {
            rule: Some(permission::Rule::NotRule(Box::new(self))),
        }
    }
}

impl Matcher for Principal {
    fn all(mut ids: Vec<Principal>) -> Principal {
        match ids.len() {
            0 => any_principal(),
            1 => ids.remove(0),
            _ => Principal {
                identifier: Some(principal::Identifier::AndIds(principal::Set { ids })),
            },
        }
    }

    fn either(mut ids: Vec<Principal>) -> Principal {
        if ids.len() == 1 {
            return ids.remove(0);
        }
        Principal {
            identifier: Some(principal::Identifier::OrIds(principal::Set { ids })),
        }
    }

    fn not(self) -> Principal {
        Principal {
            identifier: Some(principal::Identifier::NotId(Box::new(self))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_policies_encode_to_equal_bytes() {
        let policies: BTreeMap<String, Policy> = (0..20)
            .map(|i| (format!("policy-{i}"), Policy::default()))
            .collect();
        let first = rbac_config(rbac::Action::Allow, &policies);
        let second = rbac_config(rbac::Action::Allow, &policies.clone());
        assert_eq!(first, second);
        // And it is the RBAC message Envoy expects.
        use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as RbacFilter;
        use prost::Message;
        let decoded = RbacFilter::decode(first.value.as_slice()).unwrap();
        let rules = decoded.rules.unwrap();
        assert_eq!(rules.action, rbac::Action::Allow as i32);
        assert_eq!(rules.policies.len(), 20);
    }

    fn rule(yaml: &str) -> Rule {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn tcp_connections_follow_istios_rule_for_http_only_fields() {
        let tcp_only =
            rule("{from: [{source: {namespaces: [shop]}}], to: [{operation: {ports: ['8080']}}]}");
        let with_paths = rule(
            "{from: [{source: {namespaces: [shop]}}], to: [{operation: {paths: [/admin], ports: ['8080']}}]}",
        );
        let with_claim = rule(
            "{when: [{key: 'request.auth.claims[iss]', values: [x]}, {key: source.namespace, values: [shop]}]}",
        );
        // Nothing HTTP-only: the same rule for every action.
        for action in [Action::Allow, Action::Deny, Action::Audit] {
            assert_eq!(tcp_rule(action, &tcp_only).as_deref(), Some(&tcp_only));
        }
        // ALLOW and AUDIT rules using HTTP-only fields match no TCP connection.
        assert_eq!(tcp_rule(Action::Allow, &with_paths), None);
        assert_eq!(tcp_rule(Action::Audit, &with_claim), None);
        // DENY rules drop them and so deny more: here every connection to 8080 from shop.
        let denied = tcp_rule(Action::Deny, &with_paths).unwrap().into_owned();
        assert_eq!(denied, tcp_only);
        let denied = tcp_rule(Action::Deny, &with_claim).unwrap().into_owned();
        assert_eq!(
            denied,
            rule("{when: [{key: source.namespace, values: [shop]}]}")
        );
    }

    #[test]
    fn an_allow_policy_whose_rules_are_all_http_denies_every_tcp_connection() {
        let policy: Config<AuthorizationPolicySpec> = serde_yaml_ng::from_str(
            "{apiVersion: security.istio.io/v1, kind: AuthorizationPolicy, metadata: {name: p, namespace: shop}, spec: {action: ALLOW, rules: [{to: [{operation: {methods: [GET]}}]}]}}",
        )
        .unwrap();
        let filters = network_filters(&[&policy], "passthrough");
        assert_eq!(filters.len(), 1, "the ALLOW filter stays, with no policy");
        use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac as NetworkRbac;
        use prost::Message;
        let Some(filter::ConfigType::TypedConfig(config)) = &filters[0].config_type else {
            panic!("typed config")
        };
        assert_eq!(config.type_url, NETWORK_RBAC_TYPE);
        let decoded = NetworkRbac::decode(config.value.as_slice()).unwrap();
        assert_eq!(decoded.stat_prefix, "passthrough");
        let rules = decoded.rules.unwrap();
        assert_eq!(rules.action, rbac::Action::Allow as i32);
        assert!(rules.policies.is_empty());
    }

    #[test]
    fn istio_value_wildcards() {
        let pattern = |v| string_match(v).match_pattern.unwrap();
        assert_eq!(
            pattern("/admin*"),
            string_matcher::MatchPattern::Prefix("/admin".into())
        );
        assert_eq!(
            pattern("*.php"),
            string_matcher::MatchPattern::Suffix(".php".into())
        );
        assert_eq!(
            pattern("/x"),
            string_matcher::MatchPattern::Exact("/x".into())
        );
        assert_eq!(regex_escape("a.b"), "a\\.b");
    }
}
