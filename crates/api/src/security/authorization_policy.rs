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
    /// What a match does (default ALLOW).
    #[serde(default)]
    pub action: Action,
    /// CUSTOM's external authorizer; rejected until supported.
    pub provider: Option<ExtensionProvider>,
}

/// An external authorizer, by the name MeshConfig gives it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtensionProvider {
    /// The provider's name.
    pub name: String,
}

/// What an AuthorizationPolicy does with the requests its rules match.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Action {
    /// Only matching requests are allowed (when any ALLOW policy applies to the workload).
    #[default]
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
    /// The callers (any one of them); none: any caller.
    #[serde(default)]
    pub from: Vec<From>,
    /// The operations (any one of them); none: any operation.
    #[serde(default)]
    pub to: Vec<To>,
    /// Conditions that must all hold.
    #[serde(default)]
    pub when: Vec<Condition>,
}

/// A caller of a rule.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
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
    /// Identities that do not match.
    #[serde(default)]
    pub not_principals: Vec<String>,
    /// JWT `iss/sub`.
    #[serde(default)]
    pub request_principals: Vec<String>,
    /// JWT principals that do not match.
    #[serde(default)]
    pub not_request_principals: Vec<String>,
    /// The caller's namespace (from its mTLS identity).
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Namespaces that do not match.
    #[serde(default)]
    pub not_namespaces: Vec<String>,
    /// `NAME` (in the policy's namespace) or `NAMESPACE/NAME`: the peer's service account,
    /// whatever its trust domain. Not with `principals` or `namespaces`.
    #[serde(default)]
    pub service_accounts: Vec<String>,
    /// Service accounts that do not match.
    #[serde(default)]
    pub not_service_accounts: Vec<String>,
    /// The peer identity's trust domain: `cluster.local`, `*`, `*.example.com`.
    #[serde(default)]
    pub trust_domains: Vec<String>,
    /// Trust domains that do not match.
    #[serde(default)]
    pub not_trust_domains: Vec<String>,
    /// The connection's source address, IPs or CIDRs.
    #[serde(default)]
    pub ip_blocks: Vec<String>,
    /// Source addresses that do not match.
    #[serde(default)]
    pub not_ip_blocks: Vec<String>,
    /// The original client's address (`X-Forwarded-For` at a gateway), IPs or CIDRs.
    #[serde(default)]
    pub remote_ip_blocks: Vec<String>,
    /// Original client addresses that do not match.
    #[serde(default)]
    pub not_remote_ip_blocks: Vec<String>,
}

/// An operation of a rule.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct To {
    /// What the request asks for.
    pub operation: Operation,
}

/// What a request asks for. Each field lists alternatives (any matches); `not*` lists exclusions.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Operation {
    /// The `Host` header, exact or with a `*` prefix or suffix.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Hosts that do not match.
    #[serde(default)]
    pub not_hosts: Vec<String>,
    /// The destination port.
    #[serde(default)]
    pub ports: Vec<String>,
    /// Ports that do not match.
    #[serde(default)]
    pub not_ports: Vec<String>,
    /// The HTTP method.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Methods that do not match.
    #[serde(default)]
    pub not_methods: Vec<String>,
    /// The path, exact or with a `*` prefix or suffix.
    #[serde(default)]
    pub paths: Vec<String>,
    /// Paths that do not match.
    #[serde(default)]
    pub not_paths: Vec<String>,
}

/// `key` is `request.headers[NAME]`, `request.auth.claims[NAME]`, `source.ip`,
/// `source.namespace`, `source.principal`, `request.auth.principal`, `destination.port`...
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    /// What is tested (see above).
    pub key: String,
    /// Values of which one must match.
    #[serde(default)]
    pub values: Vec<String>,
    /// Values none of which may match.
    #[serde(default)]
    pub not_values: Vec<String>,
}
