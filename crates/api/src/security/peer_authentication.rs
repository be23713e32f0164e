use super::WorkloadSelector;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Which traffic a workload's sidecar accepts: mutual TLS only, plaintext too, or
/// plaintext only. Mesh-wide in the root namespace, per namespace, or per workload.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerAuthenticationSpec {
    pub selector: Option<WorkloadSelector>,
    pub mtls: Option<MutualTls>,
    /// By workload (container) port; only with a `selector`.
    #[serde(default)]
    pub port_level_mtls: BTreeMap<u32, MutualTls>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MutualTls {
    #[serde(default)]
    pub mode: MtlsMode,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    /// Inherit from the parent scope (namespace, then mesh; PERMISSIVE at the top).
    #[default]
    Unset,
    Disable,
    Permissive,
    Strict,
}
