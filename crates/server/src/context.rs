//! What every stream of one xDS server shares: the published snapshots, the caches of
//! generated resources, the registry and metrics, the authenticator, shutdown.

use crate::cache::GenerationCache;
use crate::changes::Changes;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::state::MeshState;
use fleetmesh_ca::Authenticator;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub(crate) struct ServerContext {
    pub snapshots: watch::Receiver<Arc<MeshState>>,
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    pub shutdown: CancellationToken,
    /// Numbers each stream, for the registry and logs.
    pub next_connection: AtomicU64,
    pub generations: GenerationCache,
    pub changes: Changes,
    pub authenticator: Arc<dyn Authenticator>,
}
