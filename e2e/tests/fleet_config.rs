//! Config applied to a cluster is the truth for that cluster's proxies (S16): two member
//! clusters of one project, served by one hosted meshd, get the same routing config
//! (a ServiceEntry with a v1 and a v2 endpoint, subsets, a VirtualService sending
//! `end-user: jason` to v2 and the rest to v1), and a real Envoy in each routes the
//! same way. A change applied to one cluster changes that cluster's proxies only. (The
//! endpoints are sample apps on loopback; the clusters' pod IPs receive no packet.)

use fleetmesh_cli::sample_app::SampleApp;
use fleetmesh_e2e::fleet::{Member, api};
use fleetmesh_e2e::*;
use fleetmesh_kube::testing::{TestCluster, wait_for};
use std::time::Duration;

const NAMESPACE: &str = "shop";
const URL: &str = "http://reviews.shop.example/";

/// The namespace, and `reviews.shop.example` with endpoints v1 at `v1_port` and v2 at
/// `v2_port` on loopback, routed by `end-user` with everything else to `default`.
fn routing(v1_port: u16, v2_port: u16, default: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{name: {NAMESPACE}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: reviews, namespace: {NAMESPACE}}}
spec:
  hosts: [reviews.shop.example]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints:
  - {{address: 127.0.0.1, ports: {{http: {v1_port}}}, labels: {{version: v1}}}}
  - {{address: 127.0.0.1, ports: {{http: {v2_port}}}, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: {NAMESPACE}}}
spec:
  host: reviews.shop.example
  trafficPolicy: {{tls: {{mode: DISABLE}}}}
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: {NAMESPACE}}}
spec:
  hosts: [reviews.shop.example]
  http:
  - match: [{{headers: {{end-user: {{exact: jason}}}}}}]
    route: [{{destination: {{host: reviews.shop.example, subset: v2}}}}]
  - route: [{{destination: {{host: reviews.shop.example, subset: {default}}}}}]
"#
    )
}

/// The version answering a request through `client`, with `end-user: jason` or not.
async fn version(client: &Workload, jason: bool) -> Option<String> {
    let headers: &[(&str, &str)] = if jason { &[("end-user", "jason")] } else { &[] };
    match request(client, reqwest::Method::GET, URL, headers).await {
        Ok((200, version, _)) => Some(version),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_config_in_every_cluster_routes_the_same() {
    let member = |name: &'static str, cluster: TestCluster| Member {
        project: "shop-project",
        trust_domain: "shop-project.svc.id.goog",
        name,
        cluster,
    };
    let one = member(
        "config-1",
        TestCluster::start("fleetmesh-config-1").expect("cluster 1 starts"),
    );
    let two = member(
        "config-2",
        TestCluster::start_with_pod_cidr("fleetmesh-config-2", "198.18.4.0/22")
            .expect("cluster 2 starts"),
    );
    let v1 = SampleApp::start(([127, 0, 0, 1], 0).into(), "reviews", "v1")
        .await
        .unwrap();
    let v2 = SampleApp::start(([127, 0, 0, 1], 0).into(), "reviews", "v2")
        .await
        .unwrap();
    let (v1_port, v2_port) = (v1.address().port(), v2.address().port());
    let mesh = LocalMesh::start_configured(None, XdsMode::Delta, |meshd| {
        meshd.cluster_id = "hosted".into();
    })
    .await
    .unwrap();
    api(&mesh)
        .enable_mesh(one.project, &Default::default())
        .await
        .unwrap();
    let output = tempfile::tempdir().unwrap();
    for cluster in [&one, &two] {
        // Istio's CRDs come with install.
        cluster.install(&mesh, output.path()).await;
        cluster.apply(&routing(v1_port, v2_port, "v1"));
    }
    let mut clients = Vec::new();
    for cluster in [&one, &two] {
        let token = cluster.pod_token(NAMESPACE);
        let pod = format!("client-{}", cluster.name);
        let client = cluster
            .connect(&mesh, &pod, NAMESPACE, token)
            .await
            .expect("the member's proxy is served");
        clients.push(client);
    }

    // The same config: both route jason to v2 and the rest to v1.
    for client in &clients {
        eventually("routing by end-user", Duration::from_secs(30), async || {
            let routed = (version(client, false).await, version(client, true).await);
            (routed == (Some("v1".into()), Some("v2".into()))).then_some(())
        })
        .await;
    }

    // A change applied to cluster 1 governs cluster 1's proxies; cluster 2's keep
    // routing as cluster 2's config says.
    one.apply(&routing(v1_port, v2_port, "v2"));
    wait_for("cluster 1's change", Duration::from_secs(30), async || {
        (version(&clients[0], false).await == Some("v2".into())).then_some(())
    })
    .await
    .unwrap();
    for _ in 0..10 {
        assert_eq!(version(&clients[1], false).await.as_deref(), Some("v1"));
        assert_eq!(version(&clients[1], true).await.as_deref(), Some("v2"));
    }
    assert_eq!(nacks(&mesh), 0);
}
