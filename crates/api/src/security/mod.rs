//! security.istio.io resources (v1, with the v1beta1 alias).

pub mod authorization_policy;
pub mod jwks;
pub mod peer_authentication;
pub mod request_authentication;

pub use authorization_policy::*;
pub use peer_authentication::*;
pub use request_authentication::*;

/// The security API's workload selector: `{ matchLabels: {...} }`.
pub use crate::networking::MatchLabels as WorkloadSelector;
