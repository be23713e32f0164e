//! Chaos: meshd attacked while real Envoys carry traffic. Each case prints the figures it
//! proves; what it asserts is that nothing legitimate fails.
//!
//! - Floods: 1,000 connections that never finish a TLS handshake on the xDS TLS port and
//!   1,000 on the webhook port, and 10,000 xDS streams without a token, all at once. The
//!   sidecars' traffic must not fail, a route change must still reach them, every stream
//!   without a token must be refused, and meshd must close every stalled connection.
//! - The API server gone for a minute: Envoy keeps the cluster's endpoints all along (no
//!   push of partial state), a change to meshd's config files still arrives meanwhile,
//!   and once the API server is back the watches resume and the cluster's changes arrive.

use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use fleetmesh_e2e::kube_eds::{
    SERVICE, deployment, envoy_endpoints, reviews_cluster, running_pods,
};
use fleetmesh_e2e::*;
use fleetmesh_kube::testing::{TestCluster, TestNamespace, wait_for};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const STALLED_PER_PORT: usize = 1_000;
const UNAUTHENTICATED_STREAMS: usize = 10_000;
/// Connections the token-less streams share (each takes 16 streams at most).
const FLOOD_CONNECTIONS: usize = 8;
/// Streams in flight at once.
const FLOOD_CONCURRENCY: usize = 50;
const _: () = assert!(UNAUTHENTICATED_STREAMS.is_multiple_of(FLOOD_CONCURRENCY));

fn abort(status: u16) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews}}
spec:
  hosts: [reviews]
  http:
  - route: [{{destination: {{host: reviews}}}}]
    fault: {{abort: {{httpStatus: {status}, percentage: {{value: 100}}}}}}
"#
    )
}

/// Opens `count` connections to `address` that send the first byte of a TLS record and
/// nothing more.
async fn stalled(address: SocketAddr, count: usize) -> Vec<TcpStream> {
    let mut held = Vec::with_capacity(count);
    for _ in 0..count {
        let mut stream = TcpStream::connect(address).await.expect("a connection");
        stream.write_all(&[0x16]).await.expect("one byte");
        held.push(stream);
    }
    held
}

/// How many of `held` the server has closed, each given `wait` to show it.
async fn closed(held: Vec<TcpStream>, wait: Duration) -> usize {
    let checks = held.into_iter().map(|mut stream| async move {
        let mut buffer = [0u8; 64];
        loop {
            match tokio::time::timeout(wait, stream.read(&mut buffer)).await {
                Ok(Ok(0) | Err(_)) => return true,
                Ok(Ok(_)) => continue, // an alert before the close
                Err(_) => return false,
            }
        }
    });
    futures::future::join_all(checks)
        .await
        .into_iter()
        .filter(|c| *c)
        .count()
}

/// Opens `UNAUTHENTICATED_STREAMS` xDS streams over TLS without a token; the status
/// codes they ended with, counted.
async fn unauthenticated_streams(address: SocketAddr, roots: &str) -> BTreeMap<String, usize> {
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(roots));
    let mut channels = Vec::new();
    for _ in 0..FLOOD_CONNECTIONS {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("https://{address}"))
            .unwrap()
            .tls_config(tls.clone())
            .unwrap();
        channels.push(endpoint.connect().await.expect("a TLS connection to meshd"));
    }
    let per_task = UNAUTHENTICATED_STREAMS / FLOOD_CONCURRENCY;
    let tasks = (0..FLOOD_CONCURRENCY).map(|i| {
        let mut client =
            AggregatedDiscoveryServiceClient::new(channels[i % channels.len()].clone());
        tokio::spawn(async move {
            let mut codes = BTreeMap::<String, usize>::new();
            for _ in 0..per_task {
                let request = DiscoveryRequest {
                    type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(),
                    ..Default::default()
                };
                let outcome = client
                    .stream_aggregated_resources(tokio_stream::iter(vec![request]))
                    .await;
                let code = match outcome {
                    Ok(_) => "served".to_string(),
                    Err(status) => format!("{:?}", status.code()),
                };
                *codes.entry(code).or_default() += 1;
            }
            codes
        })
    });
    let mut all = BTreeMap::new();
    for codes in futures::future::join_all(tasks).await {
        for (code, n) in codes.expect("a flood task") {
            *all.entry(code).or_default() += n;
        }
    }
    all
}

/// The peak resident memory of this process (meshd, the clients and the attackers), in MiB.
fn peak_rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_of_tokenless_streams_and_stalled_connections_change_nothing() {
    let store = Bookstore::start(XdsMode::Delta).await;
    let meshd = store.mesh.meshd();
    let roots = std::fs::read_to_string(store.mesh.config_dir().join(".ca/root-cert.pem"))
        .expect("the mesh roots");
    let probe = "http://reviews:9080/";
    let quiet = store.apply("reviews.yaml", &abort(418), probe, 418).await;
    let rss_before = peak_rss_mib();

    let traffic = Traffic::start(&store.frontend, "http://ratings:9080/");
    let opened = Instant::now();
    let stalled_xds = stalled(meshd.xds_tls_address(), STALLED_PER_PORT).await;
    let stalled_webhook = stalled(meshd.webhook_address(), STALLED_PER_PORT).await;
    let flood = tokio::spawn({
        let address = meshd.xds_tls_address();
        let roots = roots.clone();
        async move {
            let started = Instant::now();
            let codes = unauthenticated_streams(address, &roots).await;
            (codes, started.elapsed())
        }
    });
    let under_attack = store.apply("reviews.yaml", &abort(429), probe, 429).await;
    let (codes, flood_time) = flood.await.expect("the flood");
    let report = traffic.stop().await;

    // meshd closes what never finished its handshake (10 s); give it that and some.
    let handshake_deadline = Duration::from_secs(10);
    tokio::time::sleep(
        (handshake_deadline + Duration::from_secs(2)).saturating_sub(opened.elapsed()),
    )
    .await;
    let wait = Duration::from_secs(5);
    let closed_xds = closed(stalled_xds, wait).await;
    let closed_webhook = closed(stalled_webhook, wait).await;

    println!(
        "floods: route change {quiet:?} quiet, {under_attack:?} under attack; \
         {UNAUTHENTICATED_STREAMS} token-less streams in {flood_time:?}: {codes:?}; \
         stalled connections closed by meshd: {closed_xds}/{STALLED_PER_PORT} on xDS TLS, \
         {closed_webhook}/{STALLED_PER_PORT} on webhooks; traffic {} requests, {} failed; \
         peak RSS of the test process {rss_before} MiB before, {} MiB after",
        report.sent,
        report.failures.len(),
        peak_rss_mib()
    );
    assert!(report.sent > 0 && report.failures.is_empty(), "{report:?}");
    assert_eq!(
        codes,
        BTreeMap::from([("Unauthenticated".to_string(), UNAUTHENTICATED_STREAMS)]),
        "every stream without a token is refused as such"
    );
    assert_eq!(closed_xds, STALLED_PER_PORT, "xDS TLS port");
    assert_eq!(closed_webhook, STALLED_PER_PORT, "webhook port");
}

/// How long the API server stays away.
const OUTAGE: Duration = Duration::from_secs(60);

/// A ServiceEntry `NAME.example` whose one endpoint is `ADDRESS` in the fake pod range
/// (nothing is ever sent to it).
fn service_entry(name: &str, address: &str) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}}}
spec:
  hosts: [{name}.example]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: {address}}}]
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_gone_for_a_minute() {
    // A cluster of its own: this test stops its API server.
    let (cluster, client) = TestCluster::start_with_istio("fleetmesh-chaos")
        .await
        .expect("the local cluster starts");
    let namespace = TestNamespace::create(&client, "outage").await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace.name);
    namespace
        .apply(&format!("{SERVICE}---{}", deployment(3)))
        .await
        .unwrap();
    let running = async |count: usize| {
        wait_for("running pods", Duration::from_secs(60), async || {
            let ready = running_pods(&pods).await;
            (ready.len() == count).then_some(ready)
        })
        .await
        .unwrap()
    };
    let three = running(3).await;
    let mesh = LocalMesh::start_with(None, XdsMode::Delta, Some(cluster.kubeconfig.clone()))
        .await
        .expect("meshd watches the cluster");
    let pod = pods
        .list(&ListParams::default().labels("app=reviews"))
        .await
        .unwrap()
        .items[0]
        .metadata
        .name
        .clone()
        .unwrap();
    let labels = [("app", "reviews"), ("version", "v1")];
    let proxy = mesh
        .add_proxy("sidecar", &pod, &namespace.name, "default", &labels)
        .await
        .expect("Envoy starts");
    let reviews = reviews_cluster(&namespace);
    let holds = async |cluster: &str, want: &BTreeSet<String>, what: &str| {
        let start = Instant::now();
        eventually(what, Duration::from_secs(60), async || {
            (envoy_endpoints(&proxy, cluster) == *want).then_some(())
        })
        .await;
        start.elapsed()
    };
    holds(&reviews, &three, "Envoy to have the 3 pods").await;

    cluster.stop_apiserver().unwrap();
    let gone = Instant::now();
    mesh.write("file.yaml", &service_entry("file", "198.18.3.250"))
        .unwrap();
    let file = BTreeSet::from(["198.18.3.250:80".to_string()]);
    let file_change = holds("outbound|80||file.example", &file, "the file's change").await;
    let mut samples = 0;
    while gone.elapsed() < OUTAGE {
        assert_eq!(
            envoy_endpoints(&proxy, &reviews),
            three,
            "Envoy keeps the cluster's endpoints {:?} into the outage",
            gone.elapsed()
        );
        samples += 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    cluster.start_apiserver().unwrap();
    // Istio config written to the cluster (no controller of the cluster is involved:
    // theirs take their own time to recover).
    let back = Instant::now();
    namespace
        .apply(&service_entry("back", "198.18.3.251"))
        .await
        .unwrap();
    let written = BTreeSet::from(["198.18.3.251:80".to_string()]);
    holds(
        "outbound|80||back.example",
        &written,
        "the cluster's change",
    )
    .await;
    let resumed = back.elapsed();
    assert_eq!(envoy_endpoints(&proxy, &reviews), three);
    assert_eq!(nacks(&mesh), 0);
    println!(
        "API server gone {OUTAGE:?}: Envoy held the 3 endpoints in all {samples} samples; \
         a config file's change arrived after {file_change:?}; once the API server was \
         back, a ServiceEntry written to it reached Envoy within {resumed:?}"
    );
    namespace.delete().await.unwrap();
    cluster.stop().unwrap();
}
