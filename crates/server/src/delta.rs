//! Delta (incremental) ADS: responses carry only what changed and what was removed.
//!
//! Same ordering rules as state of the world: cluster removals wait until listeners and
//! routes are ACKed; clusters added or changed get their endpoints pushed right after.

use crate::session::{Gone, Protocol, Session};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
};
use fleetmesh_xds::{CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, PUSH_ORDER, ROUTE_TYPE};
use std::collections::{BTreeMap, BTreeSet};
use tokio::sync::mpsc;
use tonic::Status;

#[derive(Default)]
struct TypeState {
    wildcard: bool,
    subscribed: BTreeSet<String>,
    /// What the proxy holds: name → content hash.
    known: BTreeMap<String, String>,
    /// Nonce → version of each response not yet answered.
    in_flight: BTreeMap<String, String>,
    sent_version: String,
    acked_version: String,
}

pub struct Stream {
    session: Session,
    types: BTreeMap<String, TypeState>,
    tx: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
    prune_pending: bool,
}

impl Protocol for Stream {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaDiscoveryResponse;
    const NAME: &'static str = "delta";

    fn node(request: &DeltaDiscoveryRequest) -> Option<&Node> {
        request.node.as_ref()
    }

    fn new(session: Session, tx: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>) -> Stream {
        Stream {
            session,
            types: BTreeMap::new(),
            tx,
            prune_pending: false,
        }
    }

    fn session(&self) -> &Session {
        &self.session
    }

    async fn on_request(&mut self, request: DeltaDiscoveryRequest) -> Result<(), Gone> {
        let type_url = request.type_url.clone();
        if !PUSH_ORDER.contains(&type_url.as_str()) {
            return Ok(());
        }
        let first_of_type = !self.types.contains_key(&type_url);
        let state = self.types.entry(type_url.clone()).or_default();
        if !request.response_nonce.is_empty() {
            let Some(version) = state.in_flight.remove(&request.response_nonce) else {
                return Ok(()); // not ours or already answered
            };
            match &request.error_detail {
                Some(error) => self.session.record_nack(&type_url, &error.message),
                None => {
                    state.acked_version = version.clone();
                    self.session.record_ack(&type_url, &version);
                }
            }
        }
        let wildcard_type = type_url == CLUSTER_TYPE || type_url == LISTENER_TYPE;
        if first_of_type {
            // Envoy's legacy wildcard: the first request of a wildcard type names nothing.
            state.wildcard = wildcard_type && request.resource_names_subscribe.is_empty();
            state.known = request
                .initial_resource_versions
                .clone()
                .into_iter()
                .collect();
        }
        let mut changed_subscription = first_of_type;
        for name in request.resource_names_subscribe {
            if name == "*" {
                state.wildcard = true;
            } else if state.subscribed.insert(name.clone()) {
                changed_subscription = true;
            }
        }
        for name in request.resource_names_unsubscribe {
            if name == "*" {
                state.wildcard = false;
            }
            state.subscribed.remove(&name);
            state.known.remove(&name);
        }
        if changed_subscription {
            let sent = self.send(&type_url, false).await?;
            if first_of_type && sent.is_empty() {
                let version = self
                    .session
                    .generated
                    .of_type(&type_url)
                    .map(|t| t.version.clone())
                    .unwrap_or_default();
                let state = self.types.entry(type_url.clone()).or_default();
                state.sent_version = version.clone();
                state.acked_version = version.clone();
                self.session.record_in_sync(&type_url, &version);
            }
        }
        self.prune_if_safe().await
    }

    async fn on_snapshot(&mut self) -> Result<(), Gone> {
        if self.session.refresh()?.is_none() {
            return Ok(());
        }
        for type_url in PUSH_ORDER {
            if self.types.contains_key(type_url) {
                let touched = self.send(type_url, false).await?;
                if type_url == CLUSTER_TYPE && !touched.is_empty() {
                    // New or updated clusters warm on their endpoints: (re)send them.
                    let endpoints = self.types.entry(ENDPOINT_TYPE.to_string()).or_default();
                    for name in touched {
                        endpoints.known.remove(&name);
                        endpoints.subscribed.insert(name);
                    }
                }
            }
        }
        self.prune_if_safe().await
    }
}

impl Stream {
    async fn prune_if_safe(&mut self) -> Result<(), Gone> {
        let settled = [LISTENER_TYPE, ROUTE_TYPE].iter().all(|t| {
            self.types
                .get(*t)
                .is_none_or(|s| s.in_flight.is_empty() && s.sent_version == s.acked_version)
        });
        if self.prune_pending && settled {
            self.prune_pending = false;
            self.send(CLUSTER_TYPE, true).await?;
        }
        Ok(())
    }

    /// Sends what `type_url` lacks on the proxy; returns the names sent. Cluster removals
    /// wait for `remove_clusters` (after LDS/RDS settled).
    async fn send(&mut self, type_url: &str, remove_clusters: bool) -> Result<Vec<String>, Gone> {
        let generated = self.session.generated.clone();
        let Some(current) = generated.of_type(type_url) else {
            return Ok(vec![]);
        };
        let Some(state) = self.types.get_mut(type_url) else {
            return Ok(vec![]);
        };
        let wanted = |name: &str| state.wildcard || state.subscribed.contains(name);
        let updated: Vec<Resource> = current
            .iter()
            .filter(|(name, entry)| wanted(name) && state.known.get(*name) != Some(&entry.hash))
            .map(|(name, entry)| Resource {
                name: name.clone(),
                version: entry.hash.clone(),
                resource: Some(entry.resource()),
                ..Resource::default()
            })
            .collect();
        let mut removed: Vec<String> = state
            .known
            .keys()
            .filter(|name| !current.contains_key(name))
            .cloned()
            .collect();
        if type_url == CLUSTER_TYPE && !remove_clusters && !removed.is_empty() {
            self.prune_pending = true;
            removed.clear();
        }
        if updated.is_empty() && removed.is_empty() {
            return Ok(vec![]);
        }
        for resource in &updated {
            state
                .known
                .insert(resource.name.clone(), resource.version.clone());
        }
        for name in &removed {
            state.known.remove(name);
        }
        let nonce = self.session.next_nonce();
        let version = current.version.clone();
        let names: Vec<String> = updated.iter().map(|r| r.name.clone()).collect();
        let response = DeltaDiscoveryResponse {
            system_version_info: version.clone(),
            resources: updated,
            type_url: type_url.to_string(),
            removed_resources: removed,
            nonce: nonce.clone(),
            ..DeltaDiscoveryResponse::default()
        };
        let bytes = prost::Message::encoded_len(&response);
        state.in_flight.insert(nonce.clone(), version.clone());
        state.sent_version = version.clone();
        self.tx.send(Ok(response)).await.map_err(|_| Gone)?;
        self.session.record_sent(type_url, &version, &nonce, bytes);
        Ok(names)
    }
}
