//! Evicts, one pod at a time and at a set pace, what the planner picks, through the
//! Eviction API so the API server enforces PodDisruptionBudgets. A refused eviction
//! (429) puts the pod aside with exponential backoff while others go first; a pod
//! refused again and again gets an Event `DataPlaneUpgradeFailure`. No state survives a
//! restart, and none needs to: a restarted controller sees the replacement pod still
//! starting and waits for it.

use crate::planner::{self, Candidate, Inputs};
use k8s_openapi::api::core::v1::Pod;
use kube::Resource;
use kube::api::{Api, EvictParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const FIRST_BACKOFF: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Refusals before the pod gets an Event.
const REPORT_AFTER: u32 = 3;
/// The status message while PodDisruptionBudgets refuse every eviction.
pub const PDB_MESSAGE: &str = "PodDisruptionBudgets are preventing upgrade";

struct Refusal {
    until: Instant,
    backoff: Duration,
    count: u32,
}

/// Evicts outdated pods one at a time, at its pace, backing off from refusals.
pub struct Executor {
    client: kube::Client,
    events: Recorder,
    /// The pause between two evictions (a full rollout spreads over hours by default).
    pace: Duration,
    last_eviction: Option<Instant>,
    evicted: BTreeMap<String, u32>,
    refused: BTreeMap<String, Refusal>,
}

impl Executor {
    /// An executor evicting at most one pod per `pace`.
    pub fn new(client: kube::Client, pace: Duration) -> Executor {
        let events = Recorder::new(
            client.clone(),
            Reporter {
                controller: "meshd-data-plane".into(),
                instance: None,
            },
        );
        Executor {
            client,
            events,
            pace,
            last_eviction: None,
            evicted: BTreeMap::new(),
            refused: BTreeMap::new(),
        }
    }

    /// Pods whose eviction was refused lately, to leave alone for now.
    pub fn backing_off(&self) -> BTreeSet<String> {
        let now = Instant::now();
        self.refused
            .iter()
            .filter(|(_, r)| r.until > now)
            .map(|(pod, _)| pod.clone())
            .collect()
    }

    /// Evictions so far, by namespace.
    pub fn evicted(&self) -> &BTreeMap<String, u32> {
        &self.evicted
    }

    /// Revisions whose every outdated pod was refused lately: PDBs block the rollout.
    pub fn blocked(&self, inputs: &Inputs) -> BTreeSet<String> {
        let mut outdated: BTreeMap<String, Vec<Candidate>> = BTreeMap::new();
        for candidate in planner::outdated(inputs) {
            outdated
                .entry(candidate.revision.clone())
                .or_default()
                .push(candidate);
        }
        outdated
            .into_iter()
            .filter(|(_, pods)| {
                pods.iter().all(|c| {
                    self.refused
                        .contains_key(&format!("{}/{}", c.namespace, c.name))
                })
            })
            .map(|(revision, _)| revision)
            .collect()
    }

    /// Evicts the next pod if it is time.
    pub async fn step(&mut self, inputs: &Inputs<'_>) {
        if self
            .last_eviction
            .is_some_and(|at| at.elapsed() < self.pace)
        {
            return;
        }
        let Some(candidate) = planner::next(inputs) else {
            return;
        };
        let key = format!("{}/{}", candidate.namespace, candidate.name);
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &candidate.namespace);
        match pods.evict(&candidate.name, &EvictParams::default()).await {
            Ok(_) => {
                tracing::info!(pod = %key, revision = %candidate.revision, "evicted for a proxy upgrade");
                self.last_eviction = Some(Instant::now());
                *self.evicted.entry(candidate.namespace.clone()).or_insert(0) += 1;
                self.refused.remove(&key);
            }
            Err(kube::Error::Api(status)) if status.code == 429 => {
                let refusal = self.refused.entry(key.clone()).or_insert(Refusal {
                    until: Instant::now(),
                    backoff: FIRST_BACKOFF / 2,
                    count: 0,
                });
                refusal.count += 1;
                refusal.backoff = (refusal.backoff * 2).min(MAX_BACKOFF);
                refusal.until = Instant::now() + refusal.backoff;
                tracing::info!(pod = %key, retry_in = ?refusal.backoff, "eviction refused by a PodDisruptionBudget");
                if refusal.count == REPORT_AFTER {
                    self.report(&pods, &candidate, &status.message).await;
                }
            }
            Err(e) => tracing::warn!(pod = %key, error = %e, "eviction failed"),
        }
    }

    async fn report(&self, pods: &Api<Pod>, candidate: &Candidate, reason: &str) {
        let Ok(pod) = pods.get(&candidate.name).await else {
            return;
        };
        let note = format!("the proxy upgrade of this pod keeps being refused: {reason}");
        self.warn(&pod.object_ref(&()), "DataPlaneUpgradeFailure", &note)
            .await;
    }

    /// A Warning Event on an object.
    pub async fn warn(
        &self,
        object: &k8s_openapi::api::core::v1::ObjectReference,
        reason: &str,
        note: &str,
    ) {
        let event = Event {
            type_: EventType::Warning,
            reason: reason.into(),
            note: Some(note.chars().take(1000).collect()),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = self.events.publish(&event, object).await {
            tracing::warn!(error = %e, reason, "could not record an Event");
        }
    }
}
