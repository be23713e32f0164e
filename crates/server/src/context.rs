//! What every stream of one mesh shares: the published snapshots, the caches of
//! generated resources, the registry and metrics, the authenticator, shutdown; and, in a
//! fleet, which mesh a stream belongs to ([`Router`]).

use crate::cache::GenerationCache;
use crate::changes::Changes;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::state::MeshState;
use fleetmesh_ca::Authenticator;
use std::sync::Arc;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// One mesh's (or, in a fleet, one member cluster's) serving state.
pub struct ServerContext {
    pub(crate) snapshots: watch::Receiver<Arc<MeshState>>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) generations: GenerationCache,
    pub(crate) changes: Changes,
    pub(crate) authenticator: Arc<dyn Authenticator>,
    /// The member cluster it serves, in a fleet: a proxy whose node names another
    /// cluster is refused. `None`: whatever cluster the proxy names.
    pub(crate) cluster: Option<String>,
    /// How sidecars on delta streams get their outbound routes.
    pub(crate) routes: RouteDelivery,
}

/// How a mesh's sidecars get their outbound virtual hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RouteDelivery {
    /// Every virtual host the sidecar may call, in its route configs (istiod's way).
    #[default]
    Full,
    /// Each virtual host when the sidecar first calls its host (VHDS), for sidecars on
    /// delta streams; those on state-of-the-world streams, which cannot ask, get them all.
    OnDemand,
}

impl RouteDelivery {
    /// On demand if `on_demand_routes`, else full.
    pub fn on_demand_if(on_demand_routes: bool) -> RouteDelivery {
        if on_demand_routes {
            RouteDelivery::OnDemand
        } else {
            RouteDelivery::Full
        }
    }
}

impl ServerContext {
    /// Serves `snapshots` to proxies `authenticator` admits (of `cluster`, if given);
    /// streams are listed in `registry`, counted in `metrics`, and end on `shutdown`;
    /// sidecars get their routes as `routes` says.
    pub fn new(
        snapshots: watch::Receiver<Arc<MeshState>>,
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
        authenticator: Arc<dyn Authenticator>,
        cluster: Option<String>,
        routes: RouteDelivery,
    ) -> Arc<ServerContext> {
        Arc::new(ServerContext {
            snapshots,
            registry,
            metrics,
            shutdown,
            generations: GenerationCache::default(),
            changes: Changes::default(),
            authenticator,
            cluster,
            routes,
        })
    }
}

/// Which context serves a stream, by the cluster its caller names
/// ([`fleetmesh_ca::auth::CLUSTER_METADATA`]).
pub trait Router: Send + Sync + 'static {
    /// The context of `cluster`, or why the stream is refused. Asynchronous: a mesh
    /// scaled to zero wakes for its first stream.
    fn route<'a>(
        &'a self,
        cluster: Option<&'a str>,
    ) -> futures::future::BoxFuture<'a, Result<Arc<ServerContext>, tonic::Status>>;
}

/// One context for every stream (a single mesh of one cluster).
pub struct Single(pub Arc<ServerContext>);

impl Router for Single {
    fn route<'a>(
        &'a self,
        _: Option<&'a str>,
    ) -> futures::future::BoxFuture<'a, Result<Arc<ServerContext>, tonic::Status>> {
        let context = self.0.clone();
        Box::pin(async move { Ok(context) })
    }
}
