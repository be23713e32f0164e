//! The gRPC service: accepts ADS streams and hands each to its protocol's handler.

use crate::cache::GenerationCache;
use crate::changes::Changes;
use crate::grpc::{AdsService, Requests, Responses};
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::{delta, session, sotw};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use fleetmesh_ca::auth::authenticate_request;
use fleetmesh_ca::{Authenticator, Identity};
use fleetmesh_model::{Change, Partial, Snapshot};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tonic::metadata::MetadataMap;

/// A published snapshot and when it was made (for convergence times).
#[derive(Debug, Clone)]
pub struct MeshState {
    pub snapshot: Arc<Snapshot>,
    pub created: Instant,
    /// Unique among the states of this process.
    pub id: u64,
    /// The recent states this one differs from only in endpoints and VirtualServices:
    /// each one's id and what changed since, nearest first. What was generated for them
    /// can be patched instead of generated again.
    lineage: Vec<(u64, Partial)>,
}

/// How many earlier states a state remembers in its lineage.
const LINEAGE: usize = 16;

static NEXT_STATE: AtomicU64 = AtomicU64::new(1);

impl MeshState {
    pub fn new(snapshot: Snapshot) -> MeshState {
        MeshState {
            snapshot: Arc::new(snapshot),
            created: Instant::now(),
            id: NEXT_STATE.fetch_add(1, Ordering::Relaxed),
            lineage: Vec::new(),
        }
    }

    /// The state that follows this one with `snapshot`, or `None` when no proxy could
    /// tell the two apart (nothing to publish).
    pub fn next(&self, snapshot: Snapshot) -> Option<MeshState> {
        let change = snapshot.change_since(&self.snapshot);
        let mut next = MeshState::new(snapshot);
        match change {
            Change::None => return None,
            Change::Other => {}
            Change::Partial(change) => {
                for (id, earlier) in self.lineage.iter().take(LINEAGE - 1) {
                    next.lineage.push((*id, earlier.then(&change)));
                }
                next.lineage.insert(0, (self.id, change));
            }
        }
        Some(next)
    }

    /// What changed since the state `id`, when only endpoints and VirtualServices did
    /// (and that state is recent).
    pub fn changed_since(&self, id: u64) -> Option<&Partial> {
        self.lineage
            .iter()
            .find(|(earlier, _)| *earlier == id)
            .map(|(_, change)| change)
    }
}

pub(crate) struct Shared {
    pub snapshots: watch::Receiver<Arc<MeshState>>,
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    pub shutdown: CancellationToken,
    pub next_connection: AtomicU64,
    pub generations: GenerationCache,
    pub changes: Changes,
    pub authenticator: Arc<dyn Authenticator>,
}

#[derive(Clone)]
pub struct XdsServer {
    shared: Arc<Shared>,
}

impl XdsServer {
    pub fn new(
        snapshots: watch::Receiver<Arc<MeshState>>,
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
        authenticator: Arc<dyn Authenticator>,
    ) -> XdsServer {
        XdsServer {
            shared: Arc::new(Shared {
                snapshots,
                registry,
                metrics,
                shutdown,
                next_connection: AtomicU64::new(1),
                generations: GenerationCache::default(),
                changes: Changes::default(),
                authenticator,
            }),
        }
    }

    /// Serves ADS, and the gRPC services of `others` (the CA), on `listener` until the
    /// shutdown token fires; open streams end then too.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        others: tonic::service::Routes,
    ) -> Result<(), tonic::transport::Error> {
        self.serve_with(listener, others, None).await
    }

    /// As [`XdsServer::serve`], over TLS with `identity` (certificate chain and key): the
    /// port proxies outside meshd's host use, so their tokens never cross a network in
    /// the clear.
    pub async fn serve_tls(
        self,
        listener: tokio::net::TcpListener,
        others: tonic::service::Routes,
        identity: tonic::transport::Identity,
    ) -> Result<(), tonic::transport::Error> {
        let tls = tonic::transport::ServerTlsConfig::new().identity(identity);
        self.serve_with(listener, others, Some(tls)).await
    }

    async fn serve_with(
        self,
        listener: tokio::net::TcpListener,
        others: tonic::service::Routes,
        tls: Option<tonic::transport::ServerTlsConfig>,
    ) -> Result<(), tonic::transport::Error> {
        let shutdown = self.shared.shutdown.clone();
        let routes = others.add_service(AdsService(self));
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = tls {
            builder = builder.tls_config(tls)?;
        }
        builder
            .add_routes(routes)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                shutdown.cancelled_owned(),
            )
            .await
    }

    /// An unauthenticated stream is refused before it can ask for anything.
    async fn authenticate(&self, metadata: &MetadataMap) -> Result<Identity, Status> {
        authenticate_request(self.shared.authenticator.as_ref(), metadata)
            .await
            .map_err(|error| {
                tracing::warn!(%error, "refused an unauthenticated xDS stream");
                Status::from(error)
            })
    }

    /// A state-of-the-world ADS stream: authenticates it and serves it in a task of its own.
    pub(crate) async fn open_sotw(
        &self,
        metadata: &MetadataMap,
        requests: Requests<sotw::Request>,
    ) -> Result<Responses<sotw::Response>, Status> {
        let caller = self.authenticate(metadata).await?;
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(session::serve::<sotw::Stream>(
            self.shared.clone(),
            caller,
            requests,
            tx,
        ));
        Ok(rx)
    }

    /// A delta ADS stream, as [`XdsServer::open_sotw`].
    pub(crate) async fn open_delta(
        &self,
        metadata: &MetadataMap,
        requests: Requests<DeltaDiscoveryRequest>,
    ) -> Result<Responses<DeltaDiscoveryResponse>, Status> {
        let caller = self.authenticate(metadata).await?;
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(session::serve::<delta::Stream>(
            self.shared.clone(),
            caller,
            requests,
            tx,
        ));
        Ok(rx)
    }
}
