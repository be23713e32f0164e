//! One evictor per cluster, however many meshd replicas serve it: the holder of Lease
//! `fleetmesh-data-plane` in istio-system evicts and writes the status; the others only
//! follow the target versions (their injectors need them). A holder that stops renewing
//! loses the Lease after its duration, and another takes over; one that stops releases
//! it first. Optimistic concurrency (resourceVersion) makes two takers impossible.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ObjectMeta, PostParams};
use std::time::Duration;

/// The Lease whose holder drives the managed data plane.
pub const LEASE: &str = "fleetmesh-data-plane";
/// Where the Lease lives.
pub const NAMESPACE: &str = "istio-system";

/// One meshd's claim on the Lease: only its holder evicts and writes status.
pub struct Leader {
    leases: Api<Lease>,
    identity: String,
    duration: Duration,
}

impl Leader {
    /// A claim held `duration` between renewals, under an identity unique to this process.
    pub fn new(client: kube::Client, duration: Duration) -> Leader {
        let started = Timestamp::now().as_nanosecond();
        Leader {
            leases: Api::namespaced(client, NAMESPACE),
            identity: format!("meshd-{}-{started}", std::process::id()),
            duration,
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
                // Released (no holder), or not renewed in time.
                let expired = current.holder_identity.is_none()
                    || current.renew_time.as_ref().is_none_or(|renewed| {
                        let lasts = current.lease_duration_seconds.unwrap_or(0);
                        renewed.0 + SignedDuration::from_secs(i64::from(lasts)) < now
                    });
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
