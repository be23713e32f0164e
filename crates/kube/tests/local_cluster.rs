//! The local cluster itself: a real kube-apiserver whose Deployments become Running pods
//! (kwok) with IPs from 198.18.0.0/22, which nothing on this machine routes, and which survives an API server
//! restart.

use fleetmesh_kube::testing::{TestCluster, TestNamespace, running_pod_ips, wait_for};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use std::time::Duration;

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews}
spec:
  replicas: REPLICAS
  selector: {matchLabels: {app: reviews}}
  template:
    metadata: {labels: {app: reviews}}
    spec:
      containers: [{name: reviews, image: reviews:v1}]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_become_running_pods_and_the_apiserver_restarts() {
    // A cluster of its own: this test restarts the API server.
    let cluster = TestCluster::start("fleetmesh-kube-local").expect("the local cluster starts");
    let client = cluster.client().await.unwrap();
    let namespace = TestNamespace::create(&client, "local-cluster")
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace.name);

    namespace
        .apply(&DEPLOYMENT.replace("REPLICAS", "3"))
        .await
        .unwrap();
    let ips = wait_for("3 running pods", Duration::from_secs(60), async || {
        let ips = running_pod_ips(&pods, "app=reviews").await;
        (ips.len() == 3).then_some(ips)
    })
    .await
    .unwrap();
    for ip in &ips {
        assert!(
            ip.starts_with("198.18."),
            "pod IPs come from 198.18.0.0/22, not a range this machine uses: {ips:?}"
        );
    }

    namespace
        .apply(&DEPLOYMENT.replace("REPLICAS", "5"))
        .await
        .unwrap();
    wait_for("5 running pods", Duration::from_secs(60), async || {
        (running_pod_ips(&pods, "app=reviews").await.len() == 5).then_some(())
    })
    .await
    .unwrap();

    cluster.restart_apiserver().unwrap();
    let after = wait_for("the API server back", Duration::from_secs(60), async || {
        let ips = running_pod_ips(&pods, "app=reviews").await;
        (!ips.is_empty()).then_some(ips)
    })
    .await
    .unwrap();
    assert_eq!(after.len(), 5, "state survives an API server restart");
    namespace.delete().await.unwrap();
}

/// A fake range that overlaps this machine's own network (an address or a route other
/// than the default one) would make "fake" pods real: start refuses it, naming both.
#[test]
fn a_fake_range_that_overlaps_a_local_route_is_refused() {
    let route = std::process::Command::new("ip")
        .args(["-4", "route", "show", "scope", "link"])
        .output()
        .expect("ip runs");
    let route = String::from_utf8_lossy(&route.stdout);
    let Some(local) = route.split_whitespace().next() else {
        panic!("this machine has no link route to overlap: {route}")
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/kube-local");
    let output = std::process::Command::new(script)
        .args(["start", "fleetmesh-overlap-refused"])
        .env("KUBE_LOCAL_POD_CIDR", local)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "started with pods in {local}");
    assert!(
        stderr.contains("refusing") && stderr.contains(local),
        "{stderr}"
    );
    assert!(
        !std::path::Path::new("/tmp/fleetmesh-clusters/fleetmesh-overlap-refused/etcd").exists(),
        "nothing was started"
    );
}
