//! Delta (incremental) xDS, as Envoy's `DELTA_GRPC` ADS: CDS and LDS as wildcards, EDS
//! and RDS by the names the clusters and listeners give; each response carries only what
//! changed, so the sidecar keeps what it holds. On demand, it also subscribes to the
//! virtual hosts of the hosts its app calls (VHDS, by alias `ROUTE_CONFIG/HOST`, once
//! the route config arrived) and to the clusters those name (on-demand CDS: names added
//! to the cluster subscription), as Envoy's `on_demand` filter does on a first request.

use super::{CLUSTER, ENDPOINT, LISTENER, Protocol, ROUTE, Received, Stream, VIRTUAL_HOST};
use crate::xds_names;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Instant;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

/// The route config of the port the simulated apps call (every benchmark service listens
/// on 8080; meshd and istiod name an outbound port's route config by the port).
const CALLED_ROUTE_CONFIG: &str = "8080";

/// Names subscribed one by one, and which of them arrived on this stream.
#[derive(Default)]
struct ByName {
    subscribed: BTreeSet<String>,
    received: HashSet<String>,
}

impl ByName {
    /// Subscribes to exactly `names`: the request that moves there, if any.
    fn follow(&mut self, type_url: &str, names: BTreeSet<String>) -> Option<DeltaDiscoveryRequest> {
        let subscribe: Vec<String> = names.difference(&self.subscribed).cloned().collect();
        let unsubscribe: Vec<String> = self.subscribed.difference(&names).cloned().collect();
        if subscribe.is_empty() && unsubscribe.is_empty() {
            return None;
        }
        self.subscribed = names;
        Some(subscription(type_url, subscribe, unsubscribe))
    }

    /// Adds `names`: the request that subscribes to those not yet subscribed, if any.
    fn add(
        &mut self,
        type_url: &str,
        names: impl IntoIterator<Item = String>,
    ) -> Option<DeltaDiscoveryRequest> {
        let new: Vec<String> = names
            .into_iter()
            .filter(|name| self.subscribed.insert(name.clone()))
            .collect();
        (!new.is_empty()).then(|| subscription(type_url, new, vec![]))
    }

    fn all_received(&self) -> bool {
        self.subscribed.iter().all(|n| self.received.contains(n))
    }
}

fn subscription(
    type_url: &str,
    subscribe: Vec<String>,
    unsubscribe: Vec<String>,
) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: type_url.to_string(),
        resource_names_subscribe: subscribe,
        resource_names_unsubscribe: unsubscribe,
        ..DeltaDiscoveryRequest::default()
    }
}

/// What the sidecar holds and has asked for on this stream.
#[derive(Default)]
struct Held {
    on_demand: bool,
    /// Each cluster's EDS name, if it is an EDS cluster.
    clusters: HashMap<String, Option<String>>,
    clusters_received: bool,
    /// Clusters asked for by name (on-demand CDS); received once held.
    on_demand_clusters: BTreeSet<String>,
    endpoints: ByName,
    /// Each listener's route configs.
    listeners: HashMap<String, Vec<String>>,
    listeners_requested: bool,
    listeners_received: bool,
    routes: ByName,
    /// Aliases of the called hosts' virtual hosts, once asked for.
    virtual_hosts: ByName,
    virtual_hosts_asked: bool,
}

impl Held {
    fn complete(&self) -> bool {
        let on_demand = !self.on_demand
            || (self.virtual_hosts_asked
                && self.virtual_hosts.all_received()
                && self
                    .on_demand_clusters
                    .iter()
                    .all(|c| self.clusters.contains_key(c)));
        self.clusters_received
            && self.endpoints.all_received()
            && self.listeners_received
            && self.routes.all_received()
            && on_demand
    }

    fn eds_names(&self) -> BTreeSet<String> {
        self.clusters.values().flatten().cloned().collect()
    }

    fn route_names(&self) -> BTreeSet<String> {
        self.listeners.values().flatten().cloned().collect()
    }

    /// LDS once, after the clusters warmed, as Envoy does.
    fn request_listeners(&mut self, requests: &mut Vec<DeltaDiscoveryRequest>) {
        if !self.listeners_requested {
            self.listeners_requested = true;
            requests.push(subscription(LISTENER, vec![], vec![]));
        }
    }

    /// Takes a response; the requests it leads to (subscriptions), after its ACK.
    fn take(
        &mut self,
        response: &DeltaDiscoveryResponse,
        calls: &[String],
    ) -> Vec<DeltaDiscoveryRequest> {
        let resources = || {
            response
                .resources
                .iter()
                .filter_map(|r| Some((r, r.resource.as_ref()?.value.as_slice())))
        };
        let mut requests = Vec::new();
        match response.type_url.as_str() {
            CLUSTER => {
                self.clusters_received = true;
                for name in &response.removed_resources {
                    self.clusters.remove(name);
                }
                for (resource, bytes) in resources() {
                    let eds = xds_names::eds_names(std::iter::once(bytes)).pop();
                    self.clusters.insert(resource.name.clone(), eds);
                }
                requests.extend(self.endpoints.follow(ENDPOINT, self.eds_names()));
                if self.endpoints.subscribed.is_empty() {
                    self.request_listeners(&mut requests);
                }
            }
            ENDPOINT => {
                let names = response.resources.iter().map(|r| r.name.clone());
                self.endpoints.received.extend(names);
                self.request_listeners(&mut requests);
            }
            LISTENER => {
                self.listeners_received = true;
                for name in &response.removed_resources {
                    self.listeners.remove(name);
                }
                for (resource, bytes) in resources() {
                    let routes = xds_names::rds_names(std::iter::once(bytes));
                    self.listeners.insert(resource.name.clone(), routes);
                }
                requests.extend(self.routes.follow(ROUTE, self.route_names()));
            }
            ROUTE => {
                let names = response.resources.iter().map(|r| r.name.clone());
                self.routes.received.extend(names);
                if self.on_demand && self.routes.received.contains(CALLED_ROUTE_CONFIG) {
                    self.virtual_hosts_asked = true;
                    let aliases = calls
                        .iter()
                        .map(|host| format!("{CALLED_ROUTE_CONFIG}/{host}"));
                    requests.extend(self.virtual_hosts.add(VIRTUAL_HOST, aliases));
                }
            }
            VIRTUAL_HOST => {
                for resource in &response.resources {
                    let names = std::iter::once(&resource.name).chain(&resource.aliases);
                    self.virtual_hosts.received.extend(names.cloned());
                }
                let wanted: Vec<String> = resources()
                    .flat_map(|(_, bytes)| xds_names::route_clusters(bytes))
                    .filter(|c| self.on_demand_clusters.insert(c.clone()))
                    .collect();
                if !wanted.is_empty() {
                    requests.push(subscription(CLUSTER, wanted, vec![]));
                }
            }
            _ => {}
        }
        requests
    }
}

pub(super) async fn stream(channel: &Channel, stream: Stream<'_>) -> Result<(), tonic::Status> {
    let identity = stream.identity;
    let (tx, rx) = mpsc::channel(8);
    let mut held = Held {
        on_demand: identity.protocol == Protocol::OnDemand,
        ..Held::default()
    };
    // The cluster wildcard, named explicitly on demand: the subscription gains names
    // later, and only an explicit `*` keeps the wildcard then.
    let wildcard = if held.on_demand {
        vec!["*".into()]
    } else {
        vec![]
    };
    let first = DeltaDiscoveryRequest {
        node: Some(identity.node.clone()),
        ..subscription(CLUSTER, wildcard, vec![])
    };
    let closed = |_| tonic::Status::cancelled("request stream closed");
    tx.send(first).await.map_err(closed)?;
    let call = identity.call(ReceiverStream::new(rx))?;
    let mut client = AggregatedDiscoveryServiceClient::new(channel.clone())
        .max_decoding_message_size(usize::MAX);
    let mut responses = client.delta_aggregated_resources(call).await?.into_inner();
    while let Some(response) = responses.message().await? {
        let at = Instant::now();
        let follow_up = held.take(&response, &identity.calls);
        let ack = DeltaDiscoveryRequest {
            type_url: response.type_url.clone(),
            response_nonce: response.nonce.clone(),
            ..DeltaDiscoveryRequest::default()
        };
        tx.send(ack).await.map_err(closed)?;
        for next in follow_up {
            tx.send(next).await.map_err(closed)?;
        }
        let resources = response
            .resources
            .iter()
            .filter_map(|r| Some(r.resource.as_ref()?.value.as_slice()));
        stream.record(Received {
            at,
            type_url: &response.type_url,
            bytes: prost::Message::encoded_len(&response) as u64,
            resources,
            clusters: (response.type_url == CLUSTER).then_some(held.clusters.len()),
            complete: held.complete(),
        });
    }
    Ok(())
}
