//! Rules for security.istio.io resources, as Istio's validation states them.

use super::common::{Errors, check_at_least_1ms, check_header_name, check_port};
use crate::security::{
    Action, AuthorizationPolicySpec, MtlsMode, PeerAuthenticationSpec, RequestAuthenticationSpec,
    Source,
};

/// Checks a PeerAuthentication; problems go to `errors`.
pub fn validate_peer_authentication(spec: &PeerAuthenticationSpec, errors: &mut Errors) {
    if !spec.port_level_mtls.is_empty() && spec.selector.is_none() {
        errors.push(
            "spec.portLevelMtls",
            "port-level mTLS needs a selector (ports belong to workloads)",
        );
    }
    for (port, mtls) in &spec.port_level_mtls {
        check_port(&format!("spec.portLevelMtls.{port}"), *port, errors);
        if mtls.mode == MtlsMode::Unset {
            errors.push(
                format!("spec.portLevelMtls.{port}.mode"),
                "a port-level mode must be STRICT, PERMISSIVE or DISABLE",
            );
        }
    }
}

/// Checks an AuthorizationPolicy; problems go to `errors`.
pub fn validate_authorization_policy(spec: &AuthorizationPolicySpec, errors: &mut Errors) {
    if spec.action == Action::Custom {
        errors.push(
            "spec.action",
            "CUSTOM (external authorization) is not supported yet; use ALLOW, DENY or AUDIT",
        );
    } else if spec.provider.is_some() {
        errors.push(
            "spec.provider",
            "a provider is only valid with action CUSTOM",
        );
    }
    for (i, rule) in spec.rules.iter().flatten().enumerate() {
        let at = format!("spec.rules[{i}]");
        for (j, from) in rule.from.iter().enumerate() {
            let at = format!("{at}.from[{j}].source");
            let source = &from.source;
            validate_service_accounts(source, &at, errors);
            for (field, blocks) in [
                ("ipBlocks", &source.ip_blocks),
                ("notIpBlocks", &source.not_ip_blocks),
                ("remoteIpBlocks", &source.remote_ip_blocks),
                ("notRemoteIpBlocks", &source.not_remote_ip_blocks),
            ] {
                for (k, block) in blocks.iter().enumerate() {
                    if parse_cidr(block).is_none() {
                        errors.push(
                            format!("{at}.{field}[{k}]"),
                            format!("{block:?} is not an IP address or CIDR block"),
                        );
                    }
                }
            }
        }
        for (j, to) in rule.to.iter().enumerate() {
            let at = format!("{at}.to[{j}].operation");
            let operation = &to.operation;
            for (field, ports) in [
                ("ports", &operation.ports),
                ("notPorts", &operation.not_ports),
            ] {
                for (k, port) in ports.iter().enumerate() {
                    match port.parse::<u32>() {
                        Ok(number) => check_port(&format!("{at}.{field}[{k}]"), number, errors),
                        Err(_) => errors.push(
                            format!("{at}.{field}[{k}]"),
                            format!("{port:?} is not a port number"),
                        ),
                    }
                }
            }
        }
        for (j, condition) in rule.when.iter().enumerate() {
            let at = format!("{at}.when[{j}]");
            if let Err(reason) = condition_key(&condition.key) {
                errors.push(format!("{at}.key"), reason.to_string());
            }
            if condition.values.is_empty() && condition.not_values.is_empty() {
                errors.push(
                    format!("{at}.values"),
                    "a condition needs values or notValues",
                );
            }
        }
    }
}

/// Istio's limits on the fields that name identities by parts: at most 16 service
/// accounts, each `NAME` or `NAMESPACE/NAME` without wildcards; trust domains without `/`,
/// with one `*` at most, at an end; service accounts not beside principals or namespaces.
fn validate_service_accounts(source: &Source, at: &str, errors: &mut Errors) {
    let by_identity = [
        &source.principals,
        &source.not_principals,
        &source.namespaces,
        &source.not_namespaces,
    ];
    let by_account = [&source.service_accounts, &source.not_service_accounts];
    if by_identity.iter().any(|v| !v.is_empty()) && by_account.iter().any(|v| !v.is_empty()) {
        errors.push(
            format!("{at}.serviceAccounts"),
            "cannot be set with principals or namespaces",
        );
    }
    for (field, accounts) in [
        ("serviceAccounts", &source.service_accounts),
        ("notServiceAccounts", &source.not_service_accounts),
    ] {
        if accounts.len() > MAX_SERVICE_ACCOUNTS {
            errors.push(
                format!("{at}.{field}"),
                format!("at most {MAX_SERVICE_ACCOUNTS} service accounts"),
            );
        }
        for (k, account) in accounts.iter().enumerate() {
            let parts: Vec<&str> = account.split('/').collect();
            let reason = if account.contains('*') {
                "wildcards are not allowed"
            } else if account.len() > 320 {
                "longer than 320 characters"
            } else if parts.len() > 2 || parts.iter().any(|part| part.is_empty()) {
                "expected SERVICE_ACCOUNT or NAMESPACE/SERVICE_ACCOUNT"
            } else {
                continue;
            };
            errors.push(
                format!("{at}.{field}[{k}]"),
                format!("{account:?}: {reason}"),
            );
        }
    }
    for (field, domains) in [
        ("trustDomains", &source.trust_domains),
        ("notTrustDomains", &source.not_trust_domains),
    ] {
        for (k, domain) in domains.iter().enumerate() {
            let reason = if domain.is_empty() {
                "empty"
            } else if domain.contains('/') {
                "a trust domain has no '/'"
            } else if domain.matches('*').count() > 1 {
                "at most one '*'"
            } else if domain.len() > 1
                && domain.contains('*')
                && !domain.starts_with('*')
                && !domain.ends_with('*')
            {
                "a '*' only at the start or the end"
            } else {
                continue;
            };
            errors.push(
                format!("{at}.{field}[{k}]"),
                format!("{domain:?}: {reason}"),
            );
        }
    }
}

/// Istio's bound on `serviceAccounts`, which keeps the generated matchers small.
const MAX_SERVICE_ACCOUNTS: usize = 16;

/// What a `when` condition tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConditionKey {
    /// `request.headers[NAME]`.
    RequestHeader(String),
    /// `source.ip`: the connection's source address.
    SourceIp,
    /// `remote.ip`: the original client's address.
    RemoteIp,
    /// `source.namespace`.
    SourceNamespace,
    /// `source.principal`.
    SourcePrincipal,
    /// `destination.ip`.
    DestinationIp,
    /// `destination.port`.
    DestinationPort,
    /// `connection.sni`.
    ConnectionSni,
    /// `iss/sub` of the request's validated JWT.
    RequestPrincipal,
    /// A claim of the request's validated JWT.
    RequestClaim(String),
}

/// An AuthorizationPolicy condition key meshd does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidConditionKey {
    /// A key that is not one of these.
    #[error(
        "{0:?} is not a supported key (request.headers[NAME], request.auth.claims[NAME], request.auth.principal, source.ip, remote.ip, source.namespace, source.principal, destination.ip, destination.port, connection.sni)"
    )]
    Unsupported(String),
    /// `request.headers[]`: the brackets name nothing.
    #[error("{prefix}[] needs {what}")]
    EmptyName {
        /// The key's prefix, e.g. `request.headers`.
        prefix: &'static str,
        /// What the brackets must name.
        what: &'static str,
    },
}

/// Reads a condition key; the error lists the keys meshd knows.
pub fn condition_key(key: &str) -> Result<ConditionKey, InvalidConditionKey> {
    if let Some(name) = bracketed(key, "request.headers", "a header name")? {
        return Ok(ConditionKey::RequestHeader(name.to_ascii_lowercase()));
    }
    if let Some(claim) = bracketed(key, "request.auth.claims", "a claim name")? {
        return Ok(ConditionKey::RequestClaim(claim.to_string()));
    }
    match key {
        "source.ip" => Ok(ConditionKey::SourceIp),
        "remote.ip" => Ok(ConditionKey::RemoteIp),
        "source.namespace" => Ok(ConditionKey::SourceNamespace),
        "source.principal" => Ok(ConditionKey::SourcePrincipal),
        "destination.ip" => Ok(ConditionKey::DestinationIp),
        "destination.port" => Ok(ConditionKey::DestinationPort),
        "connection.sni" => Ok(ConditionKey::ConnectionSni),
        "request.auth.principal" => Ok(ConditionKey::RequestPrincipal),
        k => Err(InvalidConditionKey::Unsupported(k.to_string())),
    }
}

/// The `NAME` of `PREFIX[NAME]`, if `key` has that form.
fn bracketed<'a>(
    key: &'a str,
    prefix: &'static str,
    what: &'static str,
) -> Result<Option<&'a str>, InvalidConditionKey> {
    let Some(name) = key
        .strip_prefix(prefix)
        .and_then(|k| k.strip_prefix('['))
        .and_then(|k| k.strip_suffix(']'))
    else {
        return Ok(None);
    };
    if name.is_empty() {
        return Err(InvalidConditionKey::EmptyName { prefix, what });
    }
    Ok(Some(name))
}

/// `10.0.0.0/8` or a single address, as `(address, prefix length)`.
pub fn parse_cidr(text: &str) -> Option<(std::net::IpAddr, u32)> {
    let (address, prefix) = match text.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (text, None),
    };
    let address: std::net::IpAddr = address.parse().ok()?;
    let max = if address.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        Some(p) => p.parse::<u32>().ok().filter(|p| *p <= max)?,
        None => max,
    };
    Some((address, prefix))
}

/// Checks a RequestAuthentication; problems go to `errors`.
pub fn validate_request_authentication(spec: &RequestAuthenticationSpec, errors: &mut Errors) {
    let mut issuers = std::collections::BTreeSet::new();
    for (i, rule) in spec.jwt_rules.iter().enumerate() {
        let at = format!("spec.jwtRules[{i}]");
        if rule.issuer.is_empty() {
            errors.push(format!("{at}.issuer"), "an issuer is required");
        } else if !issuers.insert(rule.issuer.as_str()) {
            errors.push(
                format!("{at}.issuer"),
                format!("issuer {:?} has another rule already", rule.issuer),
            );
        }
        match (&rule.jwks, &rule.jwks_uri) {
            (Some(_), Some(_)) => errors.push(
                format!("{at}.jwks"),
                "give the keys inline (jwks) or by address (jwksUri), not both",
            ),
            (None, None) => errors.push(
                format!("{at}.jwksUri"),
                "the keys are needed: jwksUri or jwks (discovery from the issuer is not supported)",
            ),
            (Some(jwks), None) => {
                if !jwks.trim_start().starts_with('{') {
                    errors.push(format!("{at}.jwks"), "must be a JWKS JSON object");
                }
            }
            (None, Some(uri)) => {
                if !(uri.starts_with("https://") || uri.starts_with("http://")) {
                    errors.push(
                        format!("{at}.jwksUri"),
                        format!("{uri:?} is not an http(s) URL"),
                    );
                }
            }
        }
        check_at_least_1ms(&format!("{at}.timeout"), rule.timeout, errors);
        if let Some(header) = &rule.output_payload_to_header {
            check_header_name(
                &format!("{at}.outputPayloadToHeader"),
                &header.to_ascii_lowercase(),
                errors,
            );
        }
        for (j, output) in rule.output_claim_to_headers.iter().enumerate() {
            let at = format!("{at}.outputClaimToHeaders[{j}]");
            check_header_name(
                &format!("{at}.header"),
                &output.header.to_ascii_lowercase(),
                errors,
            );
            if output.claim.is_empty() {
                errors.push(format!("{at}.claim"), "a claim name is required");
            }
        }
        for (field, names) in [
            ("fromParams", &rule.from_params),
            ("fromCookies", &rule.from_cookies),
        ] {
            for (j, name) in names.iter().enumerate() {
                if name.is_empty() {
                    errors.push(format!("{at}.{field}[{j}]"), "a name is required");
                }
            }
        }
        for (j, header) in rule.from_headers.iter().enumerate() {
            if header.name.is_empty() {
                errors.push(
                    format!("{at}.fromHeaders[{j}].name"),
                    "a header name is required",
                );
            }
        }
    }
}
