//! One simulated sidecar: an ADS stream that subscribes as Envoy does, ACKs every
//! response at once, and records what it received and when. It speaks one of Envoy's
//! three ways of getting config ([`Protocol`]): state of the world ([`sotw`]), delta
//! ([`delta`]), or delta with routes and clusters fetched on demand.
//!
//! It reconnects after an error with Envoy's backoff (jittered, 500 ms to 30 s), so a
//! control plane that refuses streams for a while (istiod before its caches synced, or
//! throttling) is measured for how long it took, not failed.

mod delta;
mod sotw;

use crate::xds_names;
use envoy_types::pb::envoy::config::core::v3::Node;
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
pub const VIRTUAL_HOST: &str = "type.googleapis.com/envoy.config.route.v3.VirtualHost";

/// How the sidecar gets its config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// State of the world (Envoy's `GRPC`, Istio's default).
    Sotw,
    /// Incremental (`DELTA_GRPC`, Istio's agent with `ISTIO_DELTA_XDS=true`).
    Delta,
    /// Delta, and the outbound virtual hosts (VHDS) and their clusters (on-demand CDS)
    /// asked for by name when first called, as Envoy's `on_demand` filter does (meshd
    /// `--on-demand-routes`).
    OnDemand,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Sotw => "sotw",
            Protocol::Delta => "delta",
            Protocol::OnDemand => "on-demand",
        }
    }
}

impl std::str::FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Protocol, String> {
        match s {
            "sotw" => Ok(Protocol::Sotw),
            "delta" => Ok(Protocol::Delta),
            "on-demand" => Ok(Protocol::OnDemand),
            other => Err(format!(
                "unknown xDS protocol {other:?} (sotw, delta or on-demand)"
            )),
        }
    }
}

/// Who the sidecar claims to be.
#[derive(Clone)]
pub struct Identity {
    pub node: Node,
    /// Sent as `authorization: Bearer`; meshd authenticates every stream.
    pub token: Option<String>,
    /// Sent as `ClusterID` metadata (as Istio's agent does): a fleet's meshd routes by it.
    pub cluster: Option<String>,
    pub protocol: Protocol,
    /// The hosts its app calls (on demand, their virtual hosts on route config `8080`
    /// are fetched); every one is part of a complete config.
    pub calls: Vec<String>,
}

impl Identity {
    /// The gRPC call carrying `body`, with the sidecar's credentials.
    fn call<T>(&self, body: T) -> Result<tonic::Request<T>, tonic::Status> {
        let mut call = tonic::Request::new(body);
        if let Some(token) = &self.token {
            let value = format!("Bearer {token}")
                .parse()
                .map_err(|_| tonic::Status::internal("token is not a header value"))?;
            call.metadata_mut().insert("authorization", value);
        }
        if let Some(cluster) = &self.cluster {
            let value = cluster
                .parse()
                .map_err(|_| tonic::Status::internal("cluster is not a header value"))?;
            call.metadata_mut().insert("clusterid", value);
        }
        Ok(call)
    }
}

/// A change the benchmark made, and how a sidecar recognises that it has it.
pub enum Probe {
    /// A route configuration (or, on demand, a virtual host) containing this text.
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
    /// Responses received, in the order CDS, EDS, LDS, RDS (and VHDS), other.
    pub responses: [u64; 5],
    /// Clusters held (SotW: in the last CDS response).
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
        let stream = Stream {
            identity: &identity,
            stats: &stats,
            markers: markers.as_deref(),
            started,
        };
        let outcome = match identity.protocol {
            Protocol::Sotw => sotw::stream(&channel, stream).await,
            Protocol::Delta | Protocol::OnDemand => delta::stream(&channel, stream).await,
        };
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

/// One stream's view of the sidecar: what either protocol records into.
#[derive(Clone, Copy)]
struct Stream<'a> {
    identity: &'a Identity,
    stats: &'a SharedStats,
    markers: Option<&'a Markers>,
    /// The first connection attempt.
    started: Instant,
}

/// One response, as the stream read it.
struct Received<'a, R> {
    at: Instant,
    type_url: &'a str,
    bytes: u64,
    /// Each resource's encoded bytes.
    resources: R,
    /// Clusters held after it, for a CDS response.
    clusters: Option<usize>,
    /// Whether the sidecar's config is complete after it.
    complete: bool,
}

impl Stream<'_> {
    /// Counts a response, notes the markers it carries and whether the config is complete.
    fn record<'r>(&self, received: Received<'_, impl Iterator<Item = &'r [u8]> + Clone>) {
        let seen = self.markers.map(|m| {
            newly_seen(
                &m.current(),
                received.type_url,
                received.resources,
                self.stats,
            )
        });
        let mut s = self.stats.lock();
        s.bytes += received.bytes;
        s.stream_bytes += received.bytes;
        s.responses[slot(received.type_url)] += 1;
        if let Some(clusters) = received.clusters {
            s.clusters = clusters;
        }
        if s.complete_after.is_none() && received.complete {
            s.complete_after = Some(received.at - self.started);
            s.initial_bytes = Some(s.stream_bytes);
        }
        for id in seen.into_iter().flatten() {
            s.seen.entry(id).or_insert(received.at);
        }
    }
}

/// Where [`Stats::responses`] counts a type.
fn slot(type_url: &str) -> usize {
    match type_url {
        CLUSTER => 0,
        ENDPOINT => 1,
        LISTENER => 2,
        ROUTE | VIRTUAL_HOST => 3,
        _ => 4,
    }
}

/// The markers a response of `type_url` with these resources carries that the sidecar
/// had not seen yet.
fn newly_seen<'r>(
    markers: &[Arc<Marker>],
    type_url: &str,
    resources: impl Iterator<Item = &'r [u8]> + Clone,
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
    let mut seen = Vec::new();
    match type_url {
        ROUTE | VIRTUAL_HOST => {
            for marker in &unseen {
                if let Probe::RouteText(text) = &marker.probe
                    && resources
                        .clone()
                        .any(|bytes| memchr::memmem::find(bytes, text).is_some())
                {
                    seen.push(marker.id);
                }
            }
        }
        ENDPOINT if unseen.iter().any(|m| matches!(m.probe, Probe::Endpoint(_))) => {
            let addresses: std::collections::HashSet<String> =
                xds_names::endpoint_addresses(resources)
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
