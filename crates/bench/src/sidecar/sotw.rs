//! State of the world: CDS, then EDS for the EDS clusters, then LDS, then RDS for the
//! listeners' route names, each response the whole set of its type.

use super::{CLUSTER, ENDPOINT, LISTENER, ROUTE, Received, Stream};
use crate::xds_names;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use std::time::Instant;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

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

pub(super) async fn stream(channel: &Channel, stream: Stream<'_>) -> Result<(), tonic::Status> {
    let (tx, rx) = mpsc::channel(8);
    let mut subscriptions = Subscriptions::default();
    let first = DiscoveryRequest {
        node: Some(stream.identity.node.clone()),
        ..request(CLUSTER, &subscriptions.clusters)
    };
    let closed = |_| tonic::Status::cancelled("request stream closed");
    tx.send(first).await.map_err(closed)?;
    let call = stream.identity.call(ReceiverStream::new(rx))?;
    let mut client = AggregatedDiscoveryServiceClient::new(channel.clone())
        .max_decoding_message_size(usize::MAX);
    let mut responses = client.stream_aggregated_resources(call).await?.into_inner();
    while let Some(response) = responses.message().await? {
        let at = Instant::now();
        let resources = || response.resources.iter().map(|r| r.value.as_slice());
        let mut follow_up = Vec::new();
        let ack = match response.type_url.as_str() {
            CLUSTER => {
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
            ENDPOINT => {
                let ack = subscriptions.endpoints.accept(ENDPOINT, &response);
                subscriptions.request_listeners(&mut follow_up);
                ack
            }
            LISTENER => {
                let ack = subscriptions.listeners.accept(LISTENER, &response);
                let names = xds_names::rds_names(resources());
                subscriptions.routes.follow(ROUTE, names, &mut follow_up);
                ack
            }
            ROUTE => subscriptions.routes.accept(ROUTE, &response),
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
        stream.record(Received {
            at,
            type_url: &response.type_url,
            bytes: prost::Message::encoded_len(&response) as u64,
            resources: resources(),
            clusters: (response.type_url == CLUSTER).then_some(response.resources.len()),
            complete: subscriptions.complete(),
        });
    }
    Ok(())
}
