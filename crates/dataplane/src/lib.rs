//! The managed data plane (the seed's "Google-managed data plane"): per revision a
//! cluster-scoped [`DataPlaneControl`] ([`control`]) whose status says whether the
//! revision's managed proxies run its target version; opt-in by annotation on a
//! namespace or pod ([`opt_in`]); the controller that reconciles the status
//! ([`controller`]).
//!
//! Not yet here: the planner and the PDB-aware executor that evict outdated pods (so a
//! change of `spec.proxyVersion` is reported as `Reconciling` until then).

pub mod control;
pub mod controller;
pub mod opt_in;

pub use control::{DataPlaneControl, DataPlaneControlSpec, DataPlaneControlStatus};
