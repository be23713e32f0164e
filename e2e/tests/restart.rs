//! meshd killed and restarted while traffic flows: Envoy keeps serving its config, then
//! resyncs to the very same versions (they are content hashes).

use fleetmesh_e2e::*;
use std::time::Duration;

const SPLIT: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /v2}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route: [{destination: {host: reviews, subset: v1}, weight: 50}, {destination: {host: reviews, subset: v2}, weight: 50}]
"#;

async fn acked(store: &Bookstore) -> Vec<String> {
    let http = store.mesh.meshd().http_address();
    acked_versions(http, &store.frontend.node_id).await
}

async fn restart(mode: XdsMode) {
    let mut store = Bookstore::start(mode).await;
    store
        .apply("reviews-vs.yaml", SPLIT, "http://reviews:9080/v2", 200)
        .await;
    eventually("the split route", Duration::from_secs(30), async || {
        (split(&store.frontend, "http://reviews:9080/v2", 10)
            .await
            .get("v2")
            == Some(&10))
        .then_some(())
    })
    .await;
    let before = acked(&store).await;

    let traffic = Traffic::start(&store.frontend, "http://reviews:9080/");
    tokio::time::sleep(Duration::from_millis(300)).await;
    store.mesh.stop_meshd().await;
    // Envoy keeps its last config while the control plane is away.
    tokio::time::sleep(Duration::from_secs(1)).await;
    store
        .mesh
        .start_meshd()
        .await
        .expect("meshd restarts on the same ports");
    let after = acked(&store).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = traffic.stop().await;

    println!(
        "{mode:?}: versions before {before:?}, after {after:?}; traffic {} requests, {} failed",
        report.sent,
        report.failures.len()
    );
    assert_eq!(before, after, "Envoy resyncs to the same versions");
    assert!(
        report.failures.is_empty(),
        "requests failed across the restart: {:?}",
        report.failures
    );
    assert!(
        report.versions.contains_key("v1") && report.versions.contains_key("v2"),
        "the split kept working: {:?}",
        report.versions
    );
    assert_eq!(nacks(&store.mesh), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meshd_restart_sotw() {
    restart(XdsMode::Sotw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meshd_restart_delta() {
    restart(XdsMode::Delta).await;
}
