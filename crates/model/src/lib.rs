//! The mesh model: what every source (config files, Kubernetes clusters) adds up to.
//!
//! A [`Snapshot`] is immutable: translation reads it without locks while the next one is
//! built. Nothing here knows Envoy or gRPC.

#![warn(missing_docs)]

pub mod change;
pub mod credential;
pub mod host;
pub mod multicluster;
pub mod security;
/// Services, their ports and endpoints, and workloads.
pub mod service;
pub mod snapshot;
pub mod trigger;

pub use change::{Change, PatchableChange};
pub use credential::Credential;
pub use host::{ExportTo, resolve_host};
pub use service::{Endpoint, Protocol, Service, ServicePort, Workload};
pub use snapshot::{Lookups, MeshSettings, NoLookups, Snapshot, SnapshotInput};
pub use trigger::{Origin, Trigger};

/// Istio's default DNS domain for Kubernetes services.
pub const DEFAULT_DOMAIN: &str = "cluster.local";
