//! One simulated sidecar: an ADS stream (state of the world) that subscribes as Envoy
//! does (CDS, then EDS for the EDS clusters, then LDS, then RDS for the listeners' route
//! names), ACKs every response at once, and records what it received and when.
//!
//! It reconnects after an error with Envoy's backoff (jittered, 500 ms to 30 s), so a
//! control plane that refuses streams for a while (istiod before its caches synced, or
//! throttling) is measured for how long it took, not failed.

use crate::xds_names;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";

/// Who the sidecar claims to be.
#[derive(Clone)]
pub struct Identity {
    pub node: Node,
    /// Sent as `authorization: Bearer`; meshd authenticates every stream.
    pub token: Option<String>,
    /// Sent as `ClusterID` metadata (as Istio's agent does): a fleet's meshd routes by it.
    pub cluster: Option<String>,
}

/// A change the benchmark made, and how a sidecar recognises that it has it.
pub enum Probe {
    /// A route configuration containing this text.
    RouteText(Vec<u8>),
    /// An endpoint with this address.
    Endpoint(String),
}

pub struct Marker {
    pub id: u64,
    pub probe: Probe,
}

/// The changes being waited for; observer sidecars check each push against them.
#[derive(Default)]
pub struct Markers(RwLock<Arc<Vec<Arc<Marker>>>>);

impl Markers {
    pub fn add(&self, marker: Marker) {
        let mut markers = self.0.write();
        let mut next = markers.as_ref().clone();
        next.push(Arc::new(marker));
        *markers = Arc::new(next);
    }

    pub fn clear(&self) {
        *self.0.write() = Arc::default();
    }

    fn current(&self) -> Arc<Vec<Arc<Marker>>> {
        self.0.read().clone()
    }
}

/// What one sidecar saw.
#[derive(Default)]
pub struct Stats {
    /// From the first connection attempt to the first complete config.
    pub complete_after: Option<Duration>,
    pub bytes: u64,
    /// The bytes of the first complete config, on the stream that completed it (not
    /// what earlier streams received before they ended, nor pushes after it).
    pub initial_bytes: Option<u64>,
    /// Received on the current stream.
    stream_bytes: u64,
    /// Responses received, in the order CDS, EDS, LDS, RDS, other.
    pub responses: [u64; 5],
    /// Clusters in the last CDS response.
    pub clusters: usize,
    /// When each marker was first seen.
    pub seen: HashMap<u64, Instant>,
    pub reconnects: u64,
    pub last_error: Option<String>,
}

pub type SharedStats = Arc<Mutex<Stats>>;

/// Runs the sidecar until the task is aborted.
pub async fn run(
    channel: Channel,
    identity: Identity,
    stats: SharedStats,
    markers: Option<Arc<Markers>>,
) {
    let started = Instant::now();
    let mut attempt = 0u32;
    let mut jitter = Jitter::seeded(&identity.node.id);
    loop {
        stats.lock().stream_bytes = 0;
        let outcome = stream(&channel, &identity, &stats, markers.as_deref(), started).await;
        let error = match outcome {
            Ok(()) => "the control plane closed the stream".to_string(),
            Err(status) => format!("{}: {}", status.code(), status.message()),
        };
        {
            let mut s = stats.lock();
            s.reconnects += 1;
            s.last_error = Some(error);
        }
        // Envoy's: a random wait below 500 ms × 2^attempt, that ceiling at most 30 s.
        let ceiling = BACKOFF_BASE
            .saturating_mul(1 << attempt.min(6))
            .min(BACKOFF_MAX);
        tokio::time::sleep(ceiling.mul_f64(jitter.next_fraction())).await;
        attempt += 1;
    }
}

/// Envoy's xDS reconnect backoff: base and ceiling.
const BACKOFF_BASE: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// A small pseudo-random sequence (xorshift) per sidecar, so that sidecars a control
/// plane dropped together do not all come back together.
struct Jitter(u64);

impl Jitter {
    fn seeded(text: &str) -> Jitter {
        let seed = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        Jitter(seed | 1)
    }

    /// In [0, 1).
    fn next_fraction(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Default)]
struct Subscription {
    names: Vec<String>,
    version: String,
    nonce: String,
    received: bool,
}

#[derive(Default)]
struct Subscriptions {
    clusters: Subscription,
    endpoints: Subscription,
    listeners: Subscription,
    routes: Subscription,
    listeners_requested: bool,
}

impl Subscription {
    /// Takes a response of this type; returns its ACK.
    fn accept(&mut self, type_url: &str, response: &DiscoveryResponse) -> DiscoveryRequest {
        self.version = response.version_info.clone();
        self.nonce = response.nonce.clone();
        self.received = true;
        request(type_url, self)
    }

    /// Subscribes to `names` (the EDS clusters, the RDS route configs) if they changed.
    fn follow(&mut self, type_url: &str, names: Vec<String>, requests: &mut Vec<DiscoveryRequest>) {
        if names != self.names {
            self.names = names;
            requests.push(request(type_url, self));
        }
    }
}

impl Subscriptions {
    /// LDS once, after the clusters warmed, as Envoy does.
    fn request_listeners(&mut self, requests: &mut Vec<DiscoveryRequest>) {
        if !self.listeners_requested {
            self.listeners_requested = true;
            requests.push(request(LISTENER, &self.listeners));
        }
    }

    fn complete(&self) -> bool {
        self.clusters.received
            && (self.endpoints.names.is_empty() || self.endpoints.received)
            && self.listeners.received
            && (self.routes.names.is_empty() || self.routes.received)
    }
}

fn request(type_url: &str, subscription: &Subscription) -> DiscoveryRequest {
    DiscoveryRequest {
        type_url: type_url.to_string(),
        version_info: subscription.version.clone(),
        response_nonce: subscription.nonce.clone(),
        resource_names: subscription.names.clone(),
        ..DiscoveryRequest::default()
    }
}

async fn stream(
    channel: &Channel,
    identity: &Identity,
    stats: &SharedStats,
    markers: Option<&Markers>,
    started: Instant,
) -> Result<(), tonic::Status> {
    let (tx, rx) = mpsc::channel(8);
    let mut subscriptions = Subscriptions::default();
    let first = DiscoveryRequest {
        node: Some(identity.node.clone()),
        ..request(CLUSTER, &subscriptions.clusters)
    };
    let closed = |_| tonic::Status::cancelled("request stream closed");
    tx.send(first).await.map_err(closed)?;
    let mut call = tonic::Request::new(ReceiverStream::new(rx));
    if let Some(token) = &identity.token {
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| tonic::Status::internal("token is not a header value"))?;
        call.metadata_mut().insert("authorization", value);
    }
    if let Some(cluster) = &identity.cluster {
        let value = cluster
            .parse()
            .map_err(|_| tonic::Status::internal("cluster is not a header value"))?;
        call.metadata_mut().insert("clusterid", value);
    }
    let mut client = AggregatedDiscoveryServiceClient::new(channel.clone())
        .max_decoding_message_size(usize::MAX);
    let mut responses = client.stream_aggregated_resources(call).await?.into_inner();
    while let Some(response) = responses.message().await? {
        let received = Instant::now();
        let bytes = prost::Message::encoded_len(&response) as u64;
        let resources = || response.resources.iter().map(|r| r.value.as_slice());
        let slot = match response.type_url.as_str() {
            CLUSTER => 0,
            ENDPOINT => 1,
            LISTENER => 2,
            ROUTE => 3,
            _ => 4,
        };
        let mut follow_up = Vec::new();
        let ack = match slot {
            0 => {
                let ack = subscriptions.clusters.accept(CLUSTER, &response);
                let names = xds_names::eds_names(resources());
                subscriptions
                    .endpoints
                    .follow(ENDPOINT, names, &mut follow_up);
                if subscriptions.endpoints.names.is_empty() {
                    subscriptions.request_listeners(&mut follow_up);
                }
                ack
            }
            1 => {
                let ack = subscriptions.endpoints.accept(ENDPOINT, &response);
                subscriptions.request_listeners(&mut follow_up);
                ack
            }
            2 => {
                let ack = subscriptions.listeners.accept(LISTENER, &response);
                let names = xds_names::rds_names(resources());
                subscriptions.routes.follow(ROUTE, names, &mut follow_up);
                ack
            }
            3 => subscriptions.routes.accept(ROUTE, &response),
            _ => DiscoveryRequest {
                type_url: response.type_url.clone(),
                version_info: response.version_info.clone(),
                response_nonce: response.nonce.clone(),
                ..DiscoveryRequest::default()
            },
        };
        tx.send(ack).await.map_err(closed)?;
        for next in follow_up {
            tx.send(next).await.map_err(closed)?;
        }
        let seen = markers.map(|m| newly_seen(&m.current(), &response, stats));
        let mut s = stats.lock();
        s.bytes += bytes;
        s.stream_bytes += bytes;
        s.responses[slot] += 1;
        if slot == 0 {
            s.clusters = response.resources.len();
        }
        if s.complete_after.is_none() && subscriptions.complete() {
            s.complete_after = Some(received - started);
            s.initial_bytes = Some(s.stream_bytes);
        }
        for id in seen.into_iter().flatten() {
            s.seen.entry(id).or_insert(received);
        }
    }
    Ok(())
}

/// The markers this response carries that the sidecar had not seen yet.
fn newly_seen(
    markers: &[Arc<Marker>],
    response: &DiscoveryResponse,
    stats: &SharedStats,
) -> Vec<u64> {
    let unseen: Vec<&Marker> = {
        let s = stats.lock();
        markers
            .iter()
            .filter(|m| !s.seen.contains_key(&m.id))
            .map(Arc::as_ref)
            .collect()
    };
    let resources = || response.resources.iter().map(|r| r.value.as_slice());
    let mut seen = Vec::new();
    match response.type_url.as_str() {
        ROUTE => {
            for marker in &unseen {
                if let Probe::RouteText(text) = &marker.probe
                    && resources().any(|bytes| memchr::memmem::find(bytes, text).is_some())
                {
                    seen.push(marker.id);
                }
            }
        }
        ENDPOINT if unseen.iter().any(|m| matches!(m.probe, Probe::Endpoint(_))) => {
            let addresses: std::collections::HashSet<String> =
                xds_names::endpoint_addresses(resources())
                    .into_iter()
                    .collect();
            for marker in &unseen {
                if let Probe::Endpoint(address) = &marker.probe
                    && addresses.contains(address)
                {
                    seen.push(marker.id);
                }
            }
        }
        _ => {}
    }
    seen
}
