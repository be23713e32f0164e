//! The managed data plane (the seed's "Google-managed data plane"): per revision a
//! cluster-scoped [`DataPlaneControl`] ([`control`]) whose status says whether the
//! revision's managed proxies run its target version; opt-in by annotation on a
//! namespace or pod ([`opt_in`]); the controller that reconciles the status and drives
//! rollouts ([`controller`]).
//!
//! A change of `spec.proxyVersion` starts a rollout: the injector gives new pods that
//! version, the [`planner`] picks which outdated pod goes next, and the [`executor`]
//! evicts it through the Eviction API, at a set pace, PodDisruptionBudgets permitting.

#![warn(missing_docs)]

pub mod control;
pub mod controller;
pub mod executor;
pub mod leader;
pub mod opt_in;
pub mod planner;

pub use control::{DataPlaneControl, DataPlaneControlSpec, DataPlaneControlStatus};
