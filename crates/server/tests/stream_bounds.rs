//! What an authenticated proxy makes its stream remember is bounded: a delta stream that
//! subscribes to far more names than meshd has resources, or sends a name no resource
//! could have, ends with a status saying why, instead of growing meshd's memory.

mod common;

use common::{TestServer, node};
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use fleetmesh_ca::Identity;
use fleetmesh_xds::ENDPOINT_TYPE;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use common::REVIEWS as MESH;

fn subscribe(names: Vec<String>) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        node: Some(node()),
        type_url: ENDPOINT_TYPE.into(),
        resource_names_subscribe: names,
        ..DeltaDiscoveryRequest::default()
    }
}

/// Sends `requests` one by one on a delta stream; the status it ends with, if it ends
/// within a few seconds.
async fn ending(
    server: &TestServer,
    requests: Vec<DeltaDiscoveryRequest>,
) -> Option<tonic::Status> {
    let mut client = AggregatedDiscoveryServiceClient::new(server.channel().await);
    let (tx, rx) = mpsc::channel(4);
    let identity = Identity::new("default", "default");
    let mut responses = client
        .delta_aggregated_resources(server.authorized(ReceiverStream::new(rx), &identity))
        .await
        .unwrap()
        .into_inner();
    for request in requests {
        if tx.send(request).await.is_err() {
            break;
        }
    }
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match responses.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return tonic::Status::ok("ended"),
                Err(status) => return status,
            }
        }
    });
    end.await.ok()
}

#[tokio::test]
async fn too_many_names_end_the_stream() {
    let server = TestServer::start(MESH).await;
    // Within the bound: names the mesh does not have (yet) are allowed, a few at a time.
    let some: Vec<String> = (0..100)
        .map(|i| format!("outbound|80||s{i}.default"))
        .collect();
    assert!(
        ending(&server, vec![subscribe(some)]).await.is_none(),
        "served"
    );

    // Ten thousand names in batches of a thousand, no resource behind any of them.
    let batches = (0..10)
        .map(|b| {
            subscribe(
                (0..1_000)
                    .map(|i| format!("outbound|80||s{b}-{i}.default"))
                    .collect(),
            )
        })
        .collect();
    let status = ending(&server, batches).await.expect("the stream ends");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("eds names"), "{status:?}");
    server.shutdown.cancel();
}

#[tokio::test]
async fn a_name_no_resource_could_have_ends_the_stream() {
    let server = TestServer::start(MESH).await;
    let status = ending(&server, vec![subscribe(vec!["x".repeat(100_000)])])
        .await
        .expect("the stream ends");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");

    let mut reconnect = subscribe(vec![]);
    reconnect.initial_resource_versions = (0..5_000)
        .map(|i| (format!("outbound|80||s{i}.default"), "1".to_string()))
        .collect();
    let status = ending(&server, vec![reconnect])
        .await
        .expect("the stream ends");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    server.shutdown.cancel();
}
