//! Kubernetes for fleetmesh: Istio's CRDs from our types (`crds`), a cluster as a config
//! source for meshd (`source`; its services in `discovery`; its watches in `reflect`), server-side apply for the
//! installer (`apply`), pods' tokens checked by TokenReview (`token_review`), the mesh
//! roots published to every namespace (`root_cert`), and the test helpers for a real
//! local cluster (feature `testing`).

#![warn(missing_docs)]

pub mod apply;
pub mod crds;
pub mod credentials;
pub mod discovery;
pub mod egress;
pub mod jwt;
pub mod reflect;
pub mod remote;
pub mod root_cert;
pub mod source;
#[cfg(feature = "testing")]
pub mod testing;
pub mod token_review;

pub use source::ClusterSource;

/// A kubeconfig that cannot be read or used.
#[derive(Debug, thiserror::Error)]
#[error("kubeconfig {path}: {source}")]
pub struct KubeconfigError {
    /// The kubeconfig file.
    pub path: std::path::PathBuf,
    /// What was wrong with it.
    pub source: kube::config::KubeconfigError,
}

/// The client settings of the current context of the kubeconfig at `path`.
pub async fn client_config(path: &std::path::Path) -> Result<kube::Config, KubeconfigError> {
    let error = |source| KubeconfigError {
        path: path.to_path_buf(),
        source,
    };
    let loaded = kube::config::Kubeconfig::read_from(path).map_err(error)?;
    kube::Config::from_custom_kubeconfig(loaded, &kube::config::KubeConfigOptions::default())
        .await
        .map_err(error)
}
