//! Injection webhook latency as the API server sees it: AdmissionReviews for a typical
//! pod (two containers, HTTP probes) POSTed over HTTPS to a running meshd, one at a time
//! and 8 at once; prints p50 / p99 / max. Goal: p99 ≤ 5 ms.
//!   cargo bench -p fleetmesh-meshd --bench webhook_latency [-- REQUESTS]

use fleetmesh_meshd::{Meshd, MeshdConfig};
use std::time::{Duration, Instant};

const REVIEW: &str = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{
 "uid":"bench","kind":{"group":"","version":"v1","kind":"Pod"},"operation":"CREATE","namespace":"shop",
 "object":{"metadata":{"generateName":"reviews-v1-5f7d8c9b4-","labels":{"app":"reviews","version":"v1","pod-template-hash":"5f7d8c9b4"}},
  "spec":{"serviceAccountName":"reviews","containers":[
   {"name":"reviews","image":"reviews:v1","ports":[{"name":"http","containerPort":9080}],
    "readinessProbe":{"httpGet":{"path":"/ready","port":"http"}},"livenessProbe":{"tcpSocket":{"port":9080}},
    "resources":{"requests":{"cpu":"100m","memory":"64Mi"}}},
   {"name":"log-shipper","image":"shipper:v2","args":["--to","collector:4317"]}]}}}}"#;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{what:<28} n={:<6} p50={:>7.3} ms  p99={:>7.3} ms  max={:>7.3} ms",
        samples.len(),
        percentile(&samples, 0.50).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
        samples.last().unwrap().as_secs_f64() * 1e3,
    );
}

async fn send(client: &reqwest::Client, url: &str) -> Duration {
    let started = Instant::now();
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .body(REVIEW)
        .send()
        .await
        .expect("meshd answers");
    assert!(response.status().is_success());
    let body = response.bytes().await.unwrap();
    assert!(
        body.windows(9).any(|w| w == b"JSONPatch"),
        "a patch comes back"
    );
    started.elapsed()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let requests: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(2000);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("mesh")).unwrap();
    let config = MeshdConfig::for_dir(dir.path().join("mesh"));
    let root = config.ca_dir.join("root-cert.pem");
    let meshd = Meshd::start(config).await.expect("meshd starts");
    let ca = reqwest::Certificate::from_pem(&std::fs::read(root).unwrap()).unwrap();
    // As the API server does: one client, connections kept alive.
    let client = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let url = format!(
        "https://{}/inject/asm-managed/cluster/bench/redirect/init",
        meshd.webhook_address()
    );
    for _ in 0..100 {
        send(&client, &url).await;
    }
    let mut sequential = Vec::with_capacity(requests);
    for _ in 0..requests {
        sequential.push(send(&client, &url).await);
    }
    report("one at a time", sequential);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (client, url) = (client.clone(), url.clone());
        tasks.spawn(async move {
            let mut samples = Vec::new();
            for _ in 0..requests / 8 {
                samples.push(send(&client, &url).await);
            }
            samples
        });
    }
    let mut concurrent = Vec::new();
    while let Some(samples) = tasks.join_next().await {
        concurrent.extend(samples.unwrap());
    }
    let throughput = concurrent.len() as f64 / started.elapsed().as_secs_f64();
    report("8 concurrent", concurrent);
    println!("throughput (8 concurrent): {throughput:.0} reviews/s");
    meshd.shutdown().await;
}
