//! N simulated sidecars against one control plane, and the figures taken from them:
//! time to the first complete config, bytes, pushes, and how long a change took to reach
//! them.
//!
//! Every sidecar counts bytes and pushes; only the observers (an evenly spread subset)
//! check each push for the change being waited for, so that checking does not grow with N.

use crate::sidecar::{self, Identity, Marker, Markers, Probe, SharedStats};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tonic::transport::Endpoint;

pub struct Fleet {
    stats: Vec<SharedStats>,
    observers: Vec<usize>,
    markers: Arc<Markers>,
    next_marker: AtomicU64,
    tasks: Vec<JoinHandle<()>>,
}

/// Totals over every sidecar.
#[derive(Debug, Clone, Copy, Default)]
pub struct Totals {
    pub bytes: u64,
    /// Of the sidecars' first complete configs (see [`crate::sidecar::Stats`]), and how
    /// many sidecars have one.
    pub initial_bytes: u64,
    pub initial_configs: u64,
    /// Responses of each type: CDS, EDS, LDS, RDS, other.
    pub responses: [u64; 5],
    pub reconnects: u64,
}

impl Totals {
    pub fn pushes(&self) -> u64 {
        self.responses.iter().sum()
    }

    pub fn since(&self, earlier: &Totals) -> Totals {
        let mut responses = [0; 5];
        for (i, r) in responses.iter_mut().enumerate() {
            *r = self.responses[i] - earlier.responses[i];
        }
        Totals {
            bytes: self.bytes - earlier.bytes,
            initial_bytes: self.initial_bytes - earlier.initial_bytes,
            initial_configs: self.initial_configs - earlier.initial_configs,
            responses,
            reconnects: self.reconnects - earlier.reconnects,
        }
    }
}

/// How a change reached the observers.
#[derive(Debug, Clone, Default)]
pub struct Arrival {
    /// Per observer that got it: from the change to its push.
    pub latencies: Vec<Duration>,
    pub observers: usize,
}

impl Fleet {
    /// Starts every sidecar at once, each on its own connection, as a rollout of pods does.
    pub fn launch(
        address: &str,
        identities: Vec<Identity>,
        observers: usize,
    ) -> anyhow::Result<Fleet> {
        let endpoint = Endpoint::from_shared(format!("http://{address}"))?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(10));
        let count = identities.len();
        let stride = count.div_ceil(observers.max(1)).max(1);
        let observers: Vec<usize> = (0..count).step_by(stride).collect();
        let markers = Arc::new(Markers::default());
        let mut stats = Vec::with_capacity(count);
        let mut tasks = Vec::with_capacity(count);
        for (i, identity) in identities.into_iter().enumerate() {
            let shared = SharedStats::default();
            let watch = (i % stride == 0).then(|| markers.clone());
            let channel = endpoint.connect_lazy();
            tasks.push(tokio::spawn(sidecar::run(
                channel,
                identity,
                shared.clone(),
                watch,
            )));
            stats.push(shared);
        }
        Ok(Fleet {
            stats,
            observers,
            markers,
            next_marker: AtomicU64::new(0),
            tasks,
        })
    }

    pub fn len(&self) -> usize {
        self.stats.len()
    }

    /// Each sidecar's time to its first complete config, if it has one yet.
    pub fn completion_times(&self) -> Vec<Option<Duration>> {
        self.stats.iter().map(|s| s.lock().complete_after).collect()
    }

    /// Waits until every sidecar has a complete config holding at least `clusters`
    /// clusters, printing progress; gives up after `timeout`.
    pub async fn wait_complete(&self, clusters: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut last_report = Instant::now();
        loop {
            let done = self
                .stats
                .iter()
                .filter(|s| {
                    let s = s.lock();
                    s.complete_after.is_some() && s.clusters >= clusters
                })
                .count();
            if done == self.len() {
                return true;
            }
            if Instant::now() >= deadline {
                eprintln!(
                    "  {done}/{} sidecars complete after {timeout:?}; giving up",
                    self.len()
                );
                if let Some(error) = self.last_error() {
                    eprintln!("  a sidecar's last error: {error}");
                }
                return false;
            }
            if last_report.elapsed() >= Duration::from_secs(10) {
                eprintln!("  {done}/{} sidecars have their config", self.len());
                last_report = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn last_error(&self) -> Option<String> {
        self.stats.iter().find_map(|s| s.lock().last_error.clone())
    }

    pub fn totals(&self) -> Totals {
        let mut totals = Totals::default();
        for s in &self.stats {
            let s = s.lock();
            totals.bytes += s.bytes;
            if let Some(initial) = s.initial_bytes {
                totals.initial_bytes += initial;
                totals.initial_configs += 1;
            }
            totals.reconnects += s.reconnects;
            for (i, r) in totals.responses.iter_mut().enumerate() {
                *r += s.responses[i];
            }
        }
        totals
    }

    /// Registers a change; observers note when a push carries it.
    pub fn mark(&self, probe: Probe) -> u64 {
        let id = self.next_marker.fetch_add(1, Ordering::Relaxed);
        self.markers.add(Marker { id, probe });
        id
    }

    pub fn clear_marks(&self) {
        self.markers.clear();
    }

    /// Waits until every observer has change `id` (made at `since`), or none has got it
    /// for `quiet` after the last one did (scoped config reaches only some), or `timeout`.
    pub async fn wait_arrival(
        &self,
        id: u64,
        since: Instant,
        quiet: Duration,
        timeout: Duration,
    ) -> Arrival {
        let deadline = since + timeout;
        loop {
            let arrival = self.arrival(id, since);
            let newest = arrival.latencies.iter().max().map(|d| since + *d);
            let settled = newest.is_some_and(|t| t.elapsed() >= quiet);
            if arrival.latencies.len() == arrival.observers || settled || Instant::now() >= deadline
            {
                return arrival;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Where change `id`, made at `since`, has arrived so far.
    pub fn arrival(&self, id: u64, since: Instant) -> Arrival {
        let latencies = self
            .observers
            .iter()
            .filter_map(|&i| {
                let s = self.stats[i].lock();
                s.seen.get(&id).map(|t| t.saturating_duration_since(since))
            })
            .collect();
        Arrival {
            latencies,
            observers: self.observers.len(),
        }
    }

    /// Ends every stream.
    pub async fn stop(self) {
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks {
            let _ = task.await;
        }
    }
}
