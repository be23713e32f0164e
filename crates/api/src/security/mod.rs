//! security.istio.io resources (v1, with the v1beta1 alias).

pub mod authorization_policy;
pub mod jwks;
pub mod peer_authentication;
pub mod request_authentication;

pub use authorization_policy::*;
pub use peer_authentication::*;
pub use request_authentication::*;

use serde::{Deserialize, Serialize};

/// The security API's workload selector: `{ matchLabels: {...} }`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSelector {
    #[serde(default)]
    pub match_labels: crate::networking::Labels,
}
