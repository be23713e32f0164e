//! One evictor per cluster, however many meshd replicas serve it: the holder of Lease
//! `fleetmesh-data-plane` in istio-system evicts and writes the status; the others only
//! follow the target versions (their injectors need them). A holder that stops renewing
//! loses the Lease after its duration, and another takes over; one that stops releases
//! it first. Optimistic concurrency (resourceVersion) makes two takers impossible.
//!
//! Whether another's Lease expired is judged by this meshd's own clock only, as
//! Kubernetes' leader election does: the Lease must have stayed unchanged (its
//! resourceVersion) for its whole duration as this meshd watched it. The `renewTime` the
//! holder wrote is another machine's clock, and is never compared with ours.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use parking_lot::Mutex;
use std::time::{Duration, Instant};

/// The Lease whose holder drives the managed data plane.
pub const LEASE: &str = "fleetmesh-data-plane";
/// Where the Lease lives.
pub const NAMESPACE: &str = "istio-system";

/// One meshd's claim on the Lease: only its holder evicts and writes status.
pub struct Leader {
    leases: Api<Lease>,
    identity: String,
    duration: Duration,
    /// Another's Lease as last seen.
    seen: Mutex<Observation>,
}

/// The last version of another's Lease this meshd saw, and when (its own clock) it first
/// saw it.
#[derive(Default)]
struct Observation {
    seen: Option<(String, Instant)>,
}

impl Observation {
    /// Whether a Lease at `version`, held by someone (`held`) for `lasts` between
    /// renewals, has expired at `now`: released, or unchanged for `lasts` since first seen.
    fn expired(&mut self, version: &str, held: bool, lasts: Duration, now: Instant) -> bool {
        if !held {
            return true;
        }
        match &self.seen {
            Some((seen, since)) if seen == version => now.duration_since(*since) > lasts,
            _ => {
                self.seen = Some((version.to_string(), now));
                false
            }
        }
    }
}

impl Leader {
    /// A claim held `duration` between renewals, under an identity unique to this process.
    pub fn new(client: kube::Client, duration: Duration) -> Leader {
        let started = Timestamp::now().as_nanosecond();
        Leader {
            leases: Api::namespaced(client, NAMESPACE),
            identity: format!("meshd-{}-{started}", std::process::id()),
            duration,
            seen: Mutex::default(),
        }
    }

    /// Who holds the Lease when this does.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Takes or renews the Lease; whether this meshd holds it now.
    pub async fn hold(&self) -> bool {
        let now = Timestamp::now();
        let spec = LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration.as_secs() as i32),
            renew_time: Some(MicroTime(now)),
            ..LeaseSpec::default()
        };
        let result = match self.leases.get_opt(LEASE).await {
            Ok(None) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(LEASE.into()),
                        namespace: Some(NAMESPACE.into()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        acquire_time: Some(MicroTime(now)),
                        ..spec
                    }),
                };
                self.leases.create(&PostParams::default(), &lease).await
            }
            Ok(Some(mut lease)) => {
                let current = lease.spec.clone().unwrap_or_default();
                let ours = current.holder_identity.as_deref() == Some(self.identity.as_str());
                // Released (no holder), or not renewed in time as this meshd saw it.
                let lasts = current.lease_duration_seconds.unwrap_or(0).max(0) as u64;
                let version = lease.metadata.resource_version.clone().unwrap_or_default();
                let expired = self.seen.lock().expired(
                    &version,
                    current.holder_identity.is_some(),
                    Duration::from_secs(lasts),
                    Instant::now(),
                );
                if !ours && !expired {
                    return false;
                }
                let acquire_time = if ours {
                    current.acquire_time
                } else {
                    Some(MicroTime(now))
                };
                lease.spec = Some(LeaseSpec {
                    acquire_time,
                    ..spec
                });
                // Carries the resourceVersion read: a concurrent taker makes this fail.
                self.leases
                    .replace(LEASE, &PostParams::default(), &lease)
                    .await
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(_) => true,
            Err(kube::Error::Api(status)) if status.code == 409 => false,
            Err(e) => {
                tracing::debug!(error = %e, "the data plane Lease is not available");
                false
            }
        }
    }

    /// Gives the Lease up if this meshd holds it, so that another takes over at once
    /// instead of after the Lease's duration (a meshd stopping for an upgrade).
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.leases.get_opt(LEASE).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        // Carries the resourceVersion read: a Lease taken meanwhile is left alone.
        match self
            .leases
            .replace(LEASE, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => tracing::info!("released the data plane Lease"),
            Err(e) => tracing::warn!(error = %e, "could not release the data plane Lease"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_judged_by_this_clock_from_the_first_sight_of_a_version() {
        let lasts = Duration::from_secs(15);
        let start = Instant::now();
        let later = |s: u64| start + Duration::from_secs(s);
        let mut seen = Observation::default();
        // However old the holder's renewTime says it is, a version first seen now is
        // fresh for a whole duration.
        assert!(!seen.expired("v1", true, lasts, start));
        assert!(!seen.expired("v1", true, lasts, later(10)));
        // Renewed: a new version, a new duration.
        assert!(!seen.expired("v2", true, lasts, later(14)));
        assert!(!seen.expired("v2", true, lasts, later(28)));
        assert!(seen.expired("v2", true, lasts, later(30)));
        // Released: free at once.
        assert!(Observation::default().expired("v3", false, lasts, start));
    }
}
