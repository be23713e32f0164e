//! The xDS server: accepts ADS streams (state of the world, delta), authenticates each,
//! and serves it in a task of its own with its protocol's handler.

use crate::context::{Router, ServerContext, Single};
use crate::grpc::{Requests, Responses, requests, respond};
use crate::session::Protocol;
use crate::{delta, session, sotw};
use bytes::Bytes;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use fleetmesh_ca::Identity;
use fleetmesh_ca::auth::{Origin, authenticate_request, caller_cluster};
use fleetmesh_ca::refusals::RefusalLog;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tonic::metadata::MetadataMap;

const SOTW: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

/// A TLS handshake not done by then ends the connection: a client that connects and
/// says nothing must not hold meshd's resources.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Streams one connection may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS): an
/// agent opens one ADS stream and a CSR call now and then.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 16;
/// HTTP/2 pings find a peer that went away without closing (a node lost, a partition);
/// one unanswered for `KEEPALIVE_TIMEOUT` ends the connection.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// As istiod does: after this long a connection is told to go (GOAWAY), and its proxy
/// reconnects, so a new meshd replica gets its share of proxies over time.
const MAX_CONNECTION_AGE: Duration = Duration::from_secs(30 * 60);
const MAX_CONNECTION_AGE_GRACE: Duration = Duration::from_secs(10);

/// The ADS server: serves every stream from the published [`MeshState`]s of the
/// context its [`Router`] picks.
#[derive(Clone)]
pub struct XdsServer {
    router: Arc<dyn Router>,
    shutdown: CancellationToken,
    refusals: Arc<RefusalLog>,
    /// Connections each port keeps open at most ([`crate::incoming`]).
    max_connections: usize,
}

impl XdsServer {
    /// A server of one mesh: every stream is served by `context`.
    pub fn single(context: Arc<ServerContext>) -> XdsServer {
        let shutdown = context.shutdown.clone();
        XdsServer::routed(Arc::new(Single(context)), shutdown)
    }

    /// A server of several meshes: each stream is served by the context `router` picks
    /// for the cluster it names; streams end on `shutdown`.
    pub fn routed(router: Arc<dyn Router>, shutdown: CancellationToken) -> XdsServer {
        XdsServer {
            router,
            shutdown,
            refusals: Arc::default(),
            max_connections: crate::incoming::MAX_CONNECTIONS,
        }
    }

    /// The same server, keeping at most `max` connections open on each port it serves.
    pub fn with_max_connections(self, max: usize) -> XdsServer {
        XdsServer {
            max_connections: max,
            ..self
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
        let shutdown = self.shutdown.clone();
        let incoming = crate::incoming::counted(listener, self.max_connections);
        let routes = others.add_service(AdsService(self));
        let mut builder = tonic::transport::Server::builder()
            .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
            .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
            .tcp_keepalive(Some(KEEPALIVE_INTERVAL))
            .max_connection_age(MAX_CONNECTION_AGE)
            .max_connection_age_grace(MAX_CONNECTION_AGE_GRACE);
        if let Some(tls) = tls {
            builder = builder.tls_config(tls.timeout(HANDSHAKE_TIMEOUT))?;
        }
        builder
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
            .await
    }

    /// An unauthenticated stream is refused before it can ask for anything.
    async fn authenticate(
        &self,
        context: &ServerContext,
        metadata: &MetadataMap,
        origin: Origin,
    ) -> Result<Identity, Status> {
        authenticate_request(context.authenticator.as_ref(), metadata, origin)
            .await
            .map_err(|error| {
                let what = "refused an unauthenticated xDS stream";
                self.refusals.warn(what, &error, origin.peer);
                Status::from(error)
            })
    }

    /// Routes a stream of protocol `P` to its mesh, authenticates it there, and serves
    /// it in a task of its own.
    async fn open<P: Protocol + 'static>(
        &self,
        metadata: &MetadataMap,
        origin: Origin,
        requests: Requests<P::Request>,
    ) -> Result<Responses<P::Response>, Status> {
        let context = self.router.route(caller_cluster(metadata)).await?;
        let caller = self.authenticate(&context, metadata, origin).await?;
        let (tx, rx) = mpsc::channel(8);
        let metrics = context.metrics.clone();
        let serve =
            std::panic::AssertUnwindSafe(session::serve::<P>(context, caller, requests, tx));
        tokio::spawn(async move {
            // A panic ends this stream only (the proxy reconnects); it is meshd's fault,
            // counted where istiod counts its own.
            if futures::FutureExt::catch_unwind(serve).await.is_err() {
                metrics.internal_errors.inc();
                tracing::error!("an xDS stream ended by a panic in meshd");
            }
        });
        Ok(rx)
    }
}

/// ADS, routed by hand (see [`crate::grpc`] for why).
#[derive(Clone)]
struct AdsService(XdsServer);

impl tonic::server::NamedService for AdsService {
    const NAME: &'static str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
}

impl<B> tower_service::Service<http::Request<B>> for AdsService
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let server = self.0.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let metadata = MetadataMap::from_headers(parts.headers);
            let origin = Origin::of(&parts.extensions);
            let opened = match parts.uri.path() {
                SOTW => server
                    .open::<sotw::Stream>(&metadata, origin, requests::<sotw::Request, B>(body))
                    .await
                    .map(respond),
                DELTA => server
                    .open::<delta::Stream>(
                        &metadata,
                        origin,
                        requests::<DeltaDiscoveryRequest, B>(body),
                    )
                    .await
                    .map(respond),
                other => Err(Status::unimplemented(format!("no method {other}"))),
            };
            Ok(opened.unwrap_or_else(Status::into_http))
        })
    }
}
