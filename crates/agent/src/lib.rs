//! The sidecar agent: writes Envoy's bootstrap for one workload, runs Envoy, drains it on
//! shutdown. Usable as a library so tests and the demo run the same code as the binary.

pub mod bootstrap;
pub mod envoy;
pub mod identity;
pub mod process;

pub use bootstrap::{BootstrapConfig, XdsMode};
pub use identity::WorkloadIdentity;
pub use process::{EnvoyProcess, StartError};
