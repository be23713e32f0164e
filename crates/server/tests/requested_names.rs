//! A state-of-the-world proxy gets the endpoints, routes and secrets it names, not every
//! one its config has: Envoy asks for those by name, and a response carries only those.

mod common;

use common::{TestServer, node};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use fleetmesh_ca::Identity;
use fleetmesh_xds::{ENDPOINT_TYPE, ROUTE_TYPE};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const MESH: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: ratings}
spec: {selector: {app: ratings}, ports: [{name: http, port: 9080}]}
"#;

fn cluster(service: &str) -> String {
    format!("outbound|9080||{service}.default.svc.cluster.local")
}

fn request(
    type_url: &str,
    names: &[String],
    answering: Option<&DiscoveryResponse>,
) -> DiscoveryRequest {
    DiscoveryRequest {
        node: Some(node()),
        type_url: type_url.into(),
        resource_names: names.to_vec(),
        version_info: answering
            .map(|r| r.version_info.clone())
            .unwrap_or_default(),
        response_nonce: answering.map(|r| r.nonce.clone()).unwrap_or_default(),
        ..DiscoveryRequest::default()
    }
}

/// The cluster names of an EDS response's assignments.
fn assignments(response: &DiscoveryResponse) -> Vec<String> {
    response
        .resources
        .iter()
        .map(|any| {
            ClusterLoadAssignment::decode(any.value.as_slice())
                .unwrap()
                .cluster_name
        })
        .collect()
}

#[tokio::test]
async fn endpoints_and_routes_come_by_the_names_asked_for() {
    let server = TestServer::start(MESH).await;
    let mut client = AggregatedDiscoveryServiceClient::new(server.channel().await);
    let (tx, rx) = mpsc::channel(8);
    let identity = Identity::new("default", "default");
    let reviews = [cluster("reviews")];
    tx.send(request(ENDPOINT_TYPE, &reviews, None))
        .await
        .unwrap();
    let mut responses = client
        .stream_aggregated_resources(server.authorized(ReceiverStream::new(rx), &identity))
        .await
        .unwrap()
        .into_inner();
    let first = responses.message().await.unwrap().unwrap();
    assert_eq!(assignments(&first), reviews, "only the one asked for");

    let both = [cluster("ratings"), cluster("reviews")];
    tx.send(request(ENDPOINT_TYPE, &both, Some(&first)))
        .await
        .unwrap();
    let second = responses.message().await.unwrap().unwrap();
    let mut got = assignments(&second);
    got.sort();
    assert_eq!(got, both, "both, once both are asked for");

    tx.send(request(ROUTE_TYPE, &["no-such-route".to_string()], None))
        .await
        .unwrap();
    let routes = responses.message().await.unwrap().unwrap();
    assert_eq!(routes.type_url, ROUTE_TYPE);
    assert!(routes.resources.is_empty(), "no route of another name");
    server.shutdown.cancel();
}
