//! Istio's AuthorizationPolicy.

use super::WorkloadSelector;
use serde::{Deserialize, Serialize};

/// Access control on a workload's inbound requests: DENY rules first, then ALLOW (a
/// request must match one ALLOW policy when any applies); AUDIT only logs.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationPolicySpec {
    /// The workloads of the policy's namespace it applies to (none: all of them; in the root
    /// namespace: the whole mesh).
    pub selector: Option<WorkloadSelector>,
    /// Absent: the policy matches nothing (with ALLOW: allow nothing, i.e. deny all).
    pub rules: Option<Vec<Rule>>,
    #[serde(default)]
    /// What a match does (default ALLOW).
    pub action: Action,
    /// CUSTOM's external authorizer; rejected until supported.
    pub provider: Option<ExtensionProvider>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
/// An external authorizer, by the name MeshConfig gives it.
pub struct ExtensionProvider {
    /// The provider's name.
    pub name: String,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
/// What an AuthorizationPolicy does with the requests its rules match.
pub enum Action {
    #[default]
    /// Only matching requests are allowed (when any ALLOW policy applies to the workload).
    Allow,
    /// Matching requests are refused (403), whatever ALLOW policies say.
    Deny,
    /// Matching requests are marked for audit; nothing is allowed or refused.
    Audit,
    /// An external authorizer decides (not supported yet).
    Custom,
}

/// Matches when every present part matches: one of `from`, one of `to`, all of `when`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    #[serde(default)]
    /// The callers (any one of them); none: any caller.
    pub from: Vec<From>,
    #[serde(default)]
    /// The operations (any one of them); none: any operation.
    pub to: Vec<To>,
    #[serde(default)]
    /// Conditions that must all hold.
    pub when: Vec<Condition>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
/// A caller of a rule.
pub struct From {
    /// Who the caller is.
    pub source: Source,
}

/// The caller. Each field lists alternatives (any matches); `not*` lists exclusions.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Source {
    /// Peer identities without `spiffe://`: `cluster.local/ns/default/sa/sleep`.
    #[serde(default)]
    pub principals: Vec<String>,
    #[serde(default)]
    /// Identities that do not match.
    pub not_principals: Vec<String>,
    /// JWT `iss/sub`.
    #[serde(default)]
    pub request_principals: Vec<String>,
    #[serde(default)]
    /// JWT principals that do not match.
    pub not_request_principals: Vec<String>,
    #[serde(default)]
    /// The caller's namespace (from its mTLS identity).
    pub namespaces: Vec<String>,
    #[serde(default)]
    /// Namespaces that do not match.
    pub not_namespaces: Vec<String>,
    /// `NAME` (in the policy's namespace) or `NAMESPACE/NAME`: the peer's service account,
    /// whatever its trust domain. Not with `principals` or `namespaces`.
    #[serde(default)]
    pub service_accounts: Vec<String>,
    #[serde(default)]
    /// Service accounts that do not match.
    pub not_service_accounts: Vec<String>,
    /// The peer identity's trust domain: `cluster.local`, `*`, `*.example.com`.
    #[serde(default)]
    pub trust_domains: Vec<String>,
    #[serde(default)]
    /// Trust domains that do not match.
    pub not_trust_domains: Vec<String>,
    #[serde(default)]
    /// The connection's source address, IPs or CIDRs.
    pub ip_blocks: Vec<String>,
    #[serde(default)]
    /// Source addresses that do not match.
    pub not_ip_blocks: Vec<String>,
    #[serde(default)]
    /// The original client's address (`X-Forwarded-For` at a gateway), IPs or CIDRs.
    pub remote_ip_blocks: Vec<String>,
    #[serde(default)]
    /// Original client addresses that do not match.
    pub not_remote_ip_blocks: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
/// An operation of a rule.
pub struct To {
    /// What the request asks for.
    pub operation: Operation,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
/// What a request asks for. Each field lists alternatives (any matches); `not*` lists exclusions.
pub struct Operation {
    #[serde(default)]
    /// The `Host` header, exact or with a `*` prefix or suffix.
    pub hosts: Vec<String>,
    #[serde(default)]
    /// Hosts that do not match.
    pub not_hosts: Vec<String>,
    #[serde(default)]
    /// The destination port.
    pub ports: Vec<String>,
    #[serde(default)]
    /// Ports that do not match.
    pub not_ports: Vec<String>,
    #[serde(default)]
    /// The HTTP method.
    pub methods: Vec<String>,
    #[serde(default)]
    /// Methods that do not match.
    pub not_methods: Vec<String>,
    #[serde(default)]
    /// The path, exact or with a `*` prefix or suffix.
    pub paths: Vec<String>,
    #[serde(default)]
    /// Paths that do not match.
    pub not_paths: Vec<String>,
}

/// `key` is `request.headers[NAME]`, `request.auth.claims[NAME]`, `source.ip`,
/// `source.namespace`, `source.principal`, `request.auth.principal`, `destination.port`...
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    /// What is tested (see above).
    pub key: String,
    #[serde(default)]
    /// Values of which one must match.
    pub values: Vec<String>,
    #[serde(default)]
    /// Values none of which may match.
    pub not_values: Vec<String>,
}
