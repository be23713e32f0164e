//! The `fleetmesh` command's parts: the local mesh (workloads with sidecars on loopback
//! addresses), the sample app, and the demo built from both.

pub mod demo;
pub mod local_mesh;
pub mod sample_app;
