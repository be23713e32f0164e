//! A pod's projected token expires after 12 hours and the kubelet replaces the file well
//! before that; the agent reads the file for every certificate request and every xDS
//! stream, so it always proves itself with the token the file holds now. Here the file
//! gets token B and token A is revoked (its bound Secret deleted, so the API server's
//! TokenReview refuses it); then meshd restarts (a new xDS stream, nothing cached) and
//! the short-lived certificate renews: both work only with B. Envoy never holds the
//! token (its config dump does not show it).

use fleetmesh_cli::local_mesh::PodConnection;
use fleetmesh_e2e::*;
use fleetmesh_kube::testing::{TestCluster, TestNamespace};
use fleetmesh_kube::token_review::AUDIENCE;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};
use std::time::Duration;

const IDENTITY: &str = r#"
apiVersion: v1
kind: ServiceAccount
metadata: {name: reviews}
---
apiVersion: v1
kind: Secret
metadata: {name: bound-a}
---
apiVersion: v1
kind: Secret
metadata: {name: bound-b}
"#;

/// A 10-minute token of service account `reviews` for the agent's audience, bound to
/// Secret `secret` (deleting the Secret revokes it).
fn token_bound_to(cluster: &TestCluster, namespace: &str, secret: &str) -> String {
    cluster
        .run_kubectl(
            &[
                "create",
                "token",
                "reviews",
                "-n",
                namespace,
                "--audience",
                AUDIENCE,
                "--bound-object-kind",
                "Secret",
                "--bound-object-name",
                secret,
                "--duration",
                "10m",
            ],
            None,
        )
        .expect("a token for the service account")
        .trim()
        .to_string()
}

/// Whether the API server takes `token` now.
async fn authenticated(reviews: &Api<TokenReview>, token: &str) -> bool {
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.to_string()),
            audiences: Some(vec![AUDIENCE.to_string()]),
        },
        ..Default::default()
    };
    let answer = reviews
        .create(&PostParams::default(), &review)
        .await
        .unwrap();
    answer.status.and_then(|s| s.authenticated) == Some(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_proves_itself_with_the_token_its_file_holds_now() {
    let cluster = TestCluster::start("fleetmesh-kube-tests").expect("the local cluster starts");
    let client = cluster.client().await.unwrap();
    let namespace = TestNamespace::create(&client, "tokens").await.unwrap();
    namespace.apply(IDENTITY).await.unwrap();
    let token = |secret: &str| token_bound_to(&cluster, &namespace.name, secret);
    let (a, b) = (token("bound-a"), token("bound-b"));
    let reviews: Api<TokenReview> = Api::all(client.clone());

    let mut mesh = LocalMesh::start_with(None, XdsMode::Delta, Some(cluster.kubeconfig.clone()))
        .await
        .expect("meshd starts");
    mesh.cert_ttl = Duration::from_secs(20);
    let proxy = mesh
        .add_pod_proxy(
            "sidecar",
            "reviews-0",
            &namespace.name,
            "reviews",
            PodConnection {
                token: a.clone(),
                meshd_roots: None,
                cluster_id: "local".into(),
                trust_domain: "cluster.local".into(),
            },
        )
        .await
        .expect("the proxy starts with token A");
    let first = eventually("a certificate", Duration::from_secs(30), async || {
        Some(envoy_certificate_serials(&proxy)).filter(|s| !s.is_empty())
    })
    .await;
    // The token is the agent's alone: nothing Envoy holds (and its admin could dump)
    // carries it.
    let (_, dump) =
        fleetmesh_agent::process::admin_request(proxy.envoy.admin_socket(), "GET", "/config_dump")
            .unwrap();
    assert!(dump.contains("xds-grpc"), "a config dump: {dump}");
    assert!(!dump.contains(&a), "Envoy's config dump shows the token");

    std::fs::write(&proxy.token_file, &b).unwrap();
    cluster
        .run_kubectl(
            &["delete", "secret", "bound-a", "-n", &namespace.name],
            None,
        )
        .unwrap();
    // The API server caches its answers for a few seconds: wait until A is refused.
    eventually("token A revoked", Duration::from_secs(30), async || {
        (!authenticated(&reviews, &a).await).then_some(())
    })
    .await;
    assert!(authenticated(&reviews, &b).await, "token B is valid");
    mesh.restart_meshd().await.unwrap();

    // A new stream after the restart: config made afterwards still arrives.
    mesh.write(
        "late.yaml",
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: late, namespace: default}\nspec: {hosts: [late.example.com], ports: [{number: 80, name: http, protocol: HTTP}], resolution: DNS}\n",
    )
    .unwrap();
    eventually(
        "config over a stream opened with token B",
        Duration::from_secs(30),
        async || {
            let (_, clusters) = fleetmesh_agent::process::admin_request(
                proxy.envoy.admin_socket(),
                "GET",
                "/clusters",
            )
            .ok()?;
            clusters.contains("late.example.com").then_some(())
        },
    )
    .await;
    // The renewal (at half of 20 s) goes to the restarted CA with token B.
    eventually(
        "a renewed certificate",
        Duration::from_secs(40),
        async || {
            let now = envoy_certificate_serials(&proxy);
            (!now.is_empty() && now != first).then_some(())
        },
    )
    .await;
    namespace.delete().await.ok();
}
