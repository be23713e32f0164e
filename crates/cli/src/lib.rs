//! The `fleetmesh` command's parts: the local mesh (workloads with sidecars on loopback
//! addresses), the sample app, the demo built from both, and joining a Kubernetes
//! cluster to the hosted control plane (`install`, `kube_inject`) and to other clusters
//! (`remote_secret`).

pub mod analyze;
pub mod demo;
pub mod install;
pub mod kube_inject;
pub mod kubeconfig;
pub mod local_mesh;
pub mod proxy_config;
pub mod proxy_status;
pub mod remote_secret;
pub mod sample_app;
