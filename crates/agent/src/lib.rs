//! The sidecar agent: gets the workload's certificate and serves it to Envoy over SDS,
//! carries Envoy's xDS streams to meshd with the workload's credential, writes Envoy's
//! bootstrap, runs Envoy, drains it on shutdown. Usable as a library so
//! tests and the demo run the same code as the binary.

pub mod app_probes;
pub mod bootstrap;
pub mod certificate;
pub mod envoy;
pub mod identity;
pub mod meshd;
pub mod metrics;
pub mod process;
pub mod ready;
pub mod sds;
pub mod security;
mod socket;
pub mod token;
pub mod xds_proxy;

pub use bootstrap::{BootstrapConfig, XdsMode};
pub use identity::WorkloadIdentity;
pub use process::{EnvoyProcess, StartError};
pub use security::Security;
