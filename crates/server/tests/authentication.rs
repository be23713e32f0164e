//! A proxy gets config only for the identity its token proves: no token, a bad token, or
//! a token of another identity, and the stream ends before a single resource is sent.

mod common;

use common::{TestServer, node};
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use fleetmesh_ca::Identity;
use fleetmesh_xds::CLUSTER_TYPE;

use common::REVIEWS as MESH;

fn first_request() -> DiscoveryRequest {
    DiscoveryRequest {
        node: Some(node()),
        type_url: CLUSTER_TYPE.into(),
        ..Default::default()
    }
}

/// The first thing the server answers on a stream opened with `request`.
async fn first_answer(
    server: &TestServer,
    request: tonic::Request<tokio_stream::Iter<std::vec::IntoIter<DiscoveryRequest>>>,
) -> Result<usize, tonic::Status> {
    let mut client = AggregatedDiscoveryServiceClient::new(server.channel().await);
    let mut responses = client
        .stream_aggregated_resources(request)
        .await?
        .into_inner();
    match responses.message().await? {
        Some(response) => Ok(response.resources.len()),
        None => Err(tonic::Status::aborted("stream ended without a response")),
    }
}

fn requests() -> tokio_stream::Iter<std::vec::IntoIter<DiscoveryRequest>> {
    tokio_stream::iter(vec![first_request()])
}

#[tokio::test]
async fn only_the_proven_identity_gets_config() {
    let server = TestServer::start(MESH).await;

    let anonymous = first_answer(&server, tonic::Request::new(requests())).await;
    assert_eq!(anonymous.unwrap_err().code(), tonic::Code::Unauthenticated);

    let mut forged = tonic::Request::new(requests());
    forged
        .metadata_mut()
        .insert("authorization", "Bearer fm1.00.00".parse().unwrap());
    assert_eq!(
        first_answer(&server, forged).await.unwrap_err().code(),
        tonic::Code::Unauthenticated
    );

    // A genuine token, but for another service account than the proxy claims.
    let other = server.authorized(requests(), &Identity::new("default", "ratings"));
    let refused = first_answer(&server, other).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert!(refused.message().contains("default/ratings"), "{refused:?}");

    let own = server.authorized(requests(), &Identity::new("default", "default"));
    let clusters = first_answer(&server, own).await.unwrap();
    assert!(clusters > 0, "the proxy's own identity gets its clusters");
    server.shutdown.cancel();
}

/// The proxy's Pod turns out to run as another service account than its token proves:
/// the stream ends, and reconnecting is refused.
#[tokio::test]
async fn a_proxy_whose_pod_is_another_identity_loses_its_stream() {
    use fleetmesh_model::{MeshSettings, NoLookups, Snapshot, SnapshotInput, Workload};
    use fleetmesh_server::MeshState;
    use std::sync::Arc;
    use std::time::Duration;

    let server = TestServer::start(MESH).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(first_request()).await.unwrap();
    let open_requests = tokio_stream::wrappers::ReceiverStream::new(rx);
    let mut client =
        AggregatedDiscoveryServiceClient::connect(format!("http://{}", server.address))
            .await
            .unwrap();
    let mut responses = client
        .stream_aggregated_resources(
            server.authorized(open_requests, &Identity::new("default", "default")),
        )
        .await
        .unwrap()
        .into_inner();
    assert!(
        responses.message().await.unwrap().is_some(),
        "config at first"
    );

    let loaded = fleetmesh_api::load_documents(None, MESH).unwrap();
    let pod = Workload {
        namespace: "default".into(),
        name: "frontend".into(),
        ip: None,
        labels: Default::default(),
        service_account: Some("admin".into()),
    };
    server
        .snapshots
        .send_replace(Arc::new(MeshState::new(Snapshot::build(SnapshotInput {
            services: Vec::new(),
            workloads: vec![pod],
            resources: loaded.iter().map(|l| &l.resource).collect(),
            domain: "cluster.local".into(),
            mesh: MeshSettings::default(),
            cluster_id: "local".into(),
            credentials: Default::default(),
            lookups: &NoLookups,
        }))));
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match responses.message().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the stream ended");
    assert_eq!(
        ended.expect_err("with a status").code(),
        tonic::Code::PermissionDenied,
        "the proxy learns why"
    );
    drop(tx);

    let again = server.authorized(requests(), &Identity::new("default", "default"));
    let refused = first_answer(&server, again).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    server.shutdown.cancel();
}

/// Checks tokens as the server's own issuer does, noting where each came from.
struct NotingOrigins {
    tokens: fleetmesh_ca::TokenIssuer,
    origins: parking_lot::Mutex<Vec<fleetmesh_ca::Origin>>,
}

impl fleetmesh_ca::Authenticator for NotingOrigins {
    fn authenticate<'a>(
        &'a self,
        token: &'a str,
        origin: fleetmesh_ca::Origin,
    ) -> futures::future::BoxFuture<'a, Result<Identity, fleetmesh_ca::AuthError>> {
        self.origins.lock().push(origin);
        Box::pin(async move { self.tokens.verify(token) })
    }
}

/// The authenticator learns which port a stream came through and from which address:
/// meshd accepts its own tokens only on the plaintext port when a cluster's pods can
/// reach the TLS one, and counts refused tokens per address.
#[tokio::test]
async fn the_authenticator_knows_the_port_and_the_peer() {
    use std::sync::Arc;
    for tls in [false, true] {
        let keys = tempfile::tempdir().unwrap();
        let noting = Arc::new(NotingOrigins {
            tokens: fleetmesh_ca::TokenIssuer::load_or_create(keys.path()).unwrap(),
            origins: Default::default(),
        });
        let server = TestServer::start_with(MESH, tls, Some(noting.clone())).await;
        let mut request = tonic::Request::new(requests());
        let token = noting
            .tokens
            .issue(
                &Identity::new("default", "default"),
                std::time::Duration::from_secs(60),
            )
            .token;
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        assert!(first_answer(&server, request).await.unwrap() > 0);
        assert_eq!(
            *noting.origins.lock(),
            [fleetmesh_ca::Origin {
                peer: Some(std::net::Ipv4Addr::LOCALHOST.into()),
                over_tls: tls,
            }]
        );
        server.shutdown.cancel();
    }
}
