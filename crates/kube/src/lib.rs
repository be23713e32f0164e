//! Kubernetes for fleetmesh: Istio's CRDs from our types (`crds`), a cluster as a config
//! source for meshd (`source`), server-side apply for the installer (`apply`), pods' tokens checked by TokenReview
//! (`token_review`), the mesh roots published to every namespace (`root_cert`), and the test helpers for a real local cluster (feature
//! `testing`).

pub mod apply;
pub mod crds;
pub mod credentials;
pub mod root_cert;
pub mod source;
#[cfg(feature = "testing")]
pub mod testing;
pub mod token_review;

pub use source::ClusterSource;
