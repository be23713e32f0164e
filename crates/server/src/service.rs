//! The gRPC service: accepts ADS streams and hands each to its protocol's handler.

use crate::cache::GenerationCache;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::{delta, session, sotw};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use fleetmesh_model::Snapshot;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

/// A published snapshot and when it was made (for convergence times).
#[derive(Debug, Clone)]
pub struct MeshState {
    pub snapshot: Arc<Snapshot>,
    pub created: Instant,
}

impl MeshState {
    pub fn new(snapshot: Snapshot) -> MeshState {
        MeshState {
            snapshot: Arc::new(snapshot),
            created: Instant::now(),
        }
    }
}

pub(crate) struct Shared {
    pub snapshots: watch::Receiver<Arc<MeshState>>,
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    pub shutdown: CancellationToken,
    pub next_connection: AtomicU64,
    pub generations: GenerationCache,
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
    ) -> XdsServer {
        XdsServer {
            shared: Arc::new(Shared {
                snapshots,
                registry,
                metrics,
                shutdown,
                next_connection: AtomicU64::new(1),
                generations: GenerationCache::default(),
            }),
        }
    }

    /// Serves ADS on `listener` until the shutdown token fires; open streams end then too.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
    ) -> Result<(), tonic::transport::Error> {
        let shutdown = self.shared.shutdown.clone();
        tonic::transport::Server::builder()
            .add_service(
                AggregatedDiscoveryServiceServer::new(self).max_decoding_message_size(16 << 20),
            )
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                shutdown.cancelled_owned(),
            )
            .await
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for XdsServer {
    type StreamAggregatedResourcesStream = ReceiverStream<Result<DiscoveryResponse, Status>>;
    type DeltaAggregatedResourcesStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(session::serve::<sotw::Stream>(
            self.shared.clone(),
            request.into_inner(),
            tx,
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(session::serve::<delta::Stream>(
            self.shared.clone(),
            request.into_inner(),
            tx,
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
