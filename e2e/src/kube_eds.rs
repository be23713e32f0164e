//! A Deployment of the local cluster's fake (kwok) pods behind a Service, and the
//! endpoints a real Envoy holds for it: what the suites that watch EDS follow a real
//! API server through. The pod IPs never receive a packet; no request goes through the
//! proxy.

use crate::Workload;
use fleetmesh_kube::testing::{TestNamespace, running_pod_ips, wait_for};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use std::collections::BTreeSet;
use std::time::Duration;

/// Service `reviews`, port 80 to the pods' 8080.
pub const SERVICE: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 80, targetPort: 8080}]
"#;

/// Deployment `reviews` of `replicas` pods.
pub fn deployment(replicas: u32) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: reviews}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: reviews}}}}
  template:
    metadata: {{labels: {{app: reviews, version: v1}}}}
    spec:
      containers: [{{name: reviews, image: reviews:v1, ports: [{{name: http, containerPort: 8080}}]}}]
"#
    )
}

/// Applies the Service and a Deployment of `replicas` pods to `namespace`; their
/// endpoints once they run.
pub async fn deploy_reviews(namespace: &TestNamespace, replicas: usize) -> BTreeSet<String> {
    let yaml = format!("{SERVICE}---{}", deployment(replicas as u32));
    namespace.apply(&yaml).await.unwrap();
    reviews_running(namespace, replicas).await
}

/// Waits until exactly `count` reviews pods of `namespace` run; their endpoints.
pub async fn reviews_running(namespace: &TestNamespace, count: usize) -> BTreeSet<String> {
    let pods: Api<Pod> = Api::namespaced(namespace.client().clone(), &namespace.name);
    let running = wait_for(
        "the reviews pods to run",
        // Seconds when healthy; a freshly started cluster on two busy cores is slower.
        Duration::from_secs(120),
        async || {
            let ready = running_pods(&pods).await;
            (ready.len() == count).then_some(ready)
        },
    )
    .await;
    match running {
        Ok(endpoints) => endpoints,
        Err(error) => panic!("{error}\n{}", namespace.diagnosis().await),
    }
}

/// The name of one reviews pod of `namespace`.
pub async fn a_reviews_pod(namespace: &TestNamespace) -> String {
    let pods: Api<Pod> = Api::namespaced(namespace.client().clone(), &namespace.name);
    let listed = pods
        .list(&ListParams::default().labels("app=reviews"))
        .await;
    listed.unwrap().items[0].metadata.name.clone().unwrap()
}

/// `IP:8080` of every Running reviews pod.
pub async fn running_pods(pods: &Api<Pod>) -> BTreeSet<String> {
    let ips = running_pod_ips(pods, "app=reviews").await;
    ips.into_iter().map(|ip| format!("{ip}:8080")).collect()
}

/// The endpoints Envoy holds for `cluster` (from its admin `/clusters`).
pub fn envoy_endpoints(proxy: &Workload, cluster: &str) -> BTreeSet<String> {
    let (_, clusters) =
        fleetmesh_agent::process::admin_request(proxy.envoy.admin_socket(), "GET", "/clusters")
            .unwrap_or_default();
    clusters
        .lines()
        .filter_map(|line| {
            let mut parts = line.split("::");
            (parts.next()? == cluster).then_some(())?;
            let address = parts.next()?;
            address.contains(':').then(|| address.to_string())
        })
        .collect()
}

/// The outbound cluster of `reviews` in `namespace`.
pub fn reviews_cluster(namespace: &TestNamespace) -> String {
    format!("outbound|80||reviews.{}.svc.cluster.local", namespace.name)
}
