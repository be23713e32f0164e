//! networking.istio.io resources (v1, with the v1beta1 / v1alpha3 aliases).

pub mod destination_rule;
pub mod gateway;
pub mod service_entry;
pub mod sidecar;
pub mod virtual_service;
pub mod workload_entry;

pub use destination_rule::*;
pub use gateway::*;
pub use service_entry::*;
pub use sidecar::*;
pub use virtual_service::*;
pub use workload_entry::*;

use serde::{Deserialize, Serialize};

/// `{ number: N }`: how Istio selects a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortSelector {
    /// The port number.
    pub number: u32,
}

/// Istio's `Percent`: `{ value: 12.5 }`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Percent {
    /// A percentage, 0 to 100, fractions allowed.
    pub value: f64,
}

/// A workload selector: `{ matchLabels: {...} }` or `{ labels: {...} }` depending on the kind.
pub type Labels = std::collections::BTreeMap<String, String>;

/// Istio's `type.v1beta1.WorkloadSelector`, `{ matchLabels: {...} }`: how policies and
/// DestinationRules select workloads.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MatchLabels {
    /// The labels a workload must have.
    #[serde(default)]
    pub match_labels: Labels,
}
