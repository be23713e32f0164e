//! Istio's RequestAuthentication.

use super::WorkloadSelector;
use serde::{Deserialize, Serialize};

/// Which JWTs a workload accepts. A request with an invalid token is refused (401); a
/// request without one passes, unless an AuthorizationPolicy asks for a request
/// principal.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestAuthenticationSpec {
    /// The workloads of its namespace it applies to (none: the whole namespace; in the root
    /// namespace: the mesh).
    pub selector: Option<WorkloadSelector>,
    /// The issuers whose tokens are accepted, and how each is checked.
    #[serde(default)]
    pub jwt_rules: Vec<JwtRule>,
}

/// How the tokens of one issuer are found and checked.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtRule {
    /// The issuer, as the token's `iss` claim names it.
    pub issuer: String,
    /// Accepted audiences (the token's `aud`); none: any.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Where meshd fetches the keys (proxies never do).
    pub jwks_uri: Option<String>,
    /// The keys inline, as JWKS JSON.
    pub jwks: Option<String>,
    /// How long meshd waits for `jwksUri` to answer (Istio's default 5 s; meshd waits
    /// 30 s at most, whatever a rule asks, as one control plane fetches for many tenants).
    pub timeout: Option<crate::Duration>,
    /// Where the token is; with neither these nor `fromParams` nor `fromCookies`:
    /// `Authorization: Bearer <token>`, then the `access_token` query parameter.
    #[serde(default)]
    pub from_headers: Vec<JwtHeader>,
    /// Query parameters that may carry the token.
    #[serde(default)]
    pub from_params: Vec<String>,
    /// Cookies that may carry the token.
    #[serde(default)]
    pub from_cookies: Vec<String>,
    /// Whether the token is passed on to the app (default: removed).
    #[serde(default)]
    pub forward_original_token: bool,
    /// A header the proxy sets to the verified token's payload (base64url JSON).
    pub output_payload_to_header: Option<String>,
    /// Headers the proxy sets to claims of the verified token.
    #[serde(default)]
    pub output_claim_to_headers: Vec<ClaimToHeader>,
    /// Claims whose string value is a space-separated list (as `scope` and `permission`
    /// always are): a condition on one matches any of its words.
    #[serde(default)]
    pub space_delimited_claims: Vec<String>,
}

/// A claim (`a.b` for a nested one) copied into a request header.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimToHeader {
    /// The header set.
    pub header: String,
    /// The claim whose value it is set to.
    pub claim: String,
}

/// A header that may carry the token.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtHeader {
    /// The header's name.
    pub name: String,
    /// What comes before the token in it (`Bearer `).
    #[serde(default)]
    pub prefix: String,
}
