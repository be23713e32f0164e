//! Kubernetes for fleetmesh. For now: the test helpers for a real local cluster
//! (feature `testing`); clusters as meshd config sources come next (see the README).

#[cfg(feature = "testing")]
pub mod testing;
