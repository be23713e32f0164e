//! Chaos: meshd attacked while real Envoys carry traffic. Each case prints the figures it
//! proves; what it asserts is that nothing legitimate fails.
//!
//! - Floods: 1,000 connections that never finish a TLS handshake on the xDS TLS port and
//!   1,000 on the webhook port, and 10,000 xDS streams without a token, all at once. The
//!   sidecars' traffic must not fail, a route change must still reach them, every stream
//!   without a token must be refused, and meshd must close every stalled connection.
//! - meshd killed (`kill -9`, a process of its own) while 2,000 simulated sidecars and
//!   real Envoys with traffic are connected, and started again at once: no request fails,
//!   every sidecar resyncs to the very versions it had, and the reconnect storm's peak
//!   memory and CPU are reported.
//! - A partition between the proxies and meshd (a relay of the test's own that stops
//!   passing bytes, as a lost network does): traffic between the sidecars is unaffected,
//!   a change made meanwhile arrives once it heals, and the proxies resync with a push
//!   or two each, not a storm. The same with real pods on the real node, cut off meshd
//!   in their own network namespaces (`partition_in_pods`).
//! - The CA directory's disk full: a meshd that would create its CA there refuses to
//!   start, saying where and why, and leaves no partial key; on a disk that fills up
//!   while it runs, every workload keeps renewing its certificate (signing writes
//!   nothing), writing a revocation fails with the file and the reason, and works again
//!   once there is space.
//! - The API server gone for a minute: Envoy keeps the cluster's endpoints all along (no
//!   push of partial state), a change to meshd's config files still arrives meanwhile,
//!   and once the API server is back the watches resume and the cluster's changes arrive.

#[path = "chaos/partition_in_pods.rs"]
mod partition_in_pods;

use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use fleetmesh_e2e::kube_eds::{a_reviews_pod, deploy_reviews, envoy_endpoints, reviews_cluster};
use fleetmesh_e2e::*;
use fleetmesh_kube::testing::{TestCluster, TestNamespace};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One case at a time: each measures meshd under its own fault, not under another case's
/// (the machine has two cores), and the figures it prints are that fault's.
static ALONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_of_tokenless_streams_and_stalled_connections_change_nothing() {
    let _alone = ALONE.lock().await;
    let store = Bookstore::start(XdsMode::Delta).await;
    let meshd = store.mesh.meshd();
    let roots = std::fs::read_to_string(store.mesh.config_dir().join(".ca/root-cert.pem"))
        .expect("the mesh roots");
    let probe = "http://reviews:9080/";
    let quiet = store.apply("reviews.yaml", &abort(418), probe, 418).await;
    let (rss_before, _) = usage(std::process::id());

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
        usage(std::process::id()).0
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
    let _alone = ALONE.lock().await;
    // A cluster of its own: this test stops its API server.
    let (cluster, client) = TestCluster::start_with_istio("fleetmesh-chaos")
        .await
        .expect("the local cluster starts");
    let namespace = TestNamespace::create(&client, "outage").await.unwrap();
    let three = deploy_reviews(&namespace, 3).await;
    let mesh = LocalMesh::start_with(None, XdsMode::Delta, Some(cluster.kubeconfig.clone()))
        .await
        .expect("meshd watches the cluster");
    let pod = a_reviews_pod(&namespace).await;
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

/// Simulated sidecars in the kill case, and how many share one connection.
const SIMULATED: usize = 2_000;
const SIMULATED_PER_CONNECTION: usize = 8;
const CLUSTERS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const LISTENERS: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";

/// meshd as a process of its own, on the addresses and directories of `mesh`'s meshd.
struct MeshdProcess {
    child: std::process::Child,
}

impl MeshdProcess {
    /// Starts the `meshd` binary (built first if needed) as `addresses` say, and waits
    /// until it is ready.
    async fn start(config_dir: &std::path::Path, addresses: &Addresses) -> MeshdProcess {
        let binary = meshd_binary();
        let dirs = fleetmesh_meshd::MeshdConfig::for_dir(config_dir.to_path_buf());
        let log = std::fs::File::create(config_dir.join(".run/meshd-process.log")).unwrap();
        let mut command = std::process::Command::new(binary);
        command
            .arg("--config-dir")
            .arg(config_dir)
            .arg("--ca-dir")
            .arg(&dirs.ca_dir)
            .arg("--state-dir")
            .arg(&dirs.state_dir)
            .arg(format!("--xds-address={}", addresses.xds))
            .arg(format!("--xds-tls-address={}", addresses.xds_tls))
            .arg(format!("--http-address={}", addresses.http))
            .arg(format!("--webhook-address={}", addresses.webhook))
            .arg("--tenant-egress-deny=")
            .env_remove("KUBECONFIG")
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = command.spawn().expect("meshd starts");
        let url = format!("http://{}/ready", addresses.http);
        eventually("meshd to be ready", Duration::from_secs(60), async || {
            let status = reqwest::get(&url).await.ok()?.status();
            status.is_success().then_some(())
        })
        .await;
        MeshdProcess { child }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no GOAWAY, no graceful end of any stream.
    fn kill(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for MeshdProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `meshd` binary beside this test's, built now so that it is the current code.
fn meshd_binary() -> std::path::PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = std::process::Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "-p",
            "fleetmesh-meshd",
            "--bin",
            "meshd",
        ])
        .status()
        .expect("cargo runs");
    assert!(built.success(), "building meshd");
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join("meshd")
}

struct Addresses {
    xds: SocketAddr,
    xds_tls: SocketAddr,
    http: SocketAddr,
    webhook: SocketAddr,
}

/// (CDS version, LDS version) each simulated sidecar last received.
type Versions = std::sync::Arc<parking_lot::Mutex<Vec<(String, String)>>>;

/// A sidecar that asks for every cluster and listener and ACKs what it gets, again and
/// again as meshd goes away and comes back, until `stop`.
async fn simulated_sidecar(
    channel: tonic::transport::Channel,
    token: String,
    index: usize,
    versions: Versions,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use envoy_types::pb::envoy::config::core::v3::Node;
    while !*stop.borrow() {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let node = Node {
            id: format!(
                "sidecar~127.200.{}.{}~sim-{index}.default~default.svc.cluster.local",
                index / 250,
                index % 250
            ),
            ..Node::default()
        };
        for type_url in [CLUSTERS, LISTENERS] {
            let first = DiscoveryRequest {
                node: Some(node.clone()),
                type_url: type_url.into(),
                ..Default::default()
            };
            tx.send(first).await.unwrap();
        }
        let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        let mut client = AggregatedDiscoveryServiceClient::new(channel.clone());
        if let Ok(stream) = client.stream_aggregated_resources(request).await {
            let mut responses = stream.into_inner();
            loop {
                let response = tokio::select! {
                    r = responses.message() => r,
                    _ = stop.changed() => return,
                };
                let Ok(Some(response)) = response else { break };
                {
                    let mut all = versions.lock();
                    let mine = &mut all[index];
                    match response.type_url.as_str() {
                        CLUSTERS => mine.0 = response.version_info.clone(),
                        _ => mine.1 = response.version_info.clone(),
                    }
                }
                let ack = DiscoveryRequest {
                    version_info: response.version_info,
                    response_nonce: response.nonce,
                    type_url: response.type_url,
                    ..Default::default()
                };
                if tx.send(ack).await.is_err() {
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100 + (index % 10) as u64 * 50)).await;
    }
}

/// `pid`'s peak resident memory (MiB) and CPU time so far.
fn usage(pid: u32) -> (u64, Duration) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let peak_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command name's closing parenthesis: fields 14 and 15 are utime, stime.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i)?.parse::<u64>().ok())
        .sum();
    // Clock ticks are 1/100 s on Linux.
    (peak_kib / 1024, Duration::from_millis(ticks * 10))
}

/// Waits until every simulated sidecar holds `expected`; how long it took.
async fn all_hold(versions: &Versions, expected: &(String, String), what: &str) -> Duration {
    let start = Instant::now();
    eventually(what, Duration::from_secs(120), async || {
        versions.lock().iter().all(|v| v == expected).then_some(())
    })
    .await;
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meshd_killed_under_load_comes_back_to_the_same_config() {
    let _alone = ALONE.lock().await;
    let mut store = Bookstore::start(XdsMode::Sotw).await;
    let meshd = store.mesh.meshd();
    let addresses = Addresses {
        xds: meshd.xds_address(),
        xds_tls: meshd.xds_tls_address(),
        http: meshd.http_address(),
        webhook: meshd.webhook_address(),
    };
    let token = meshd
        .issue_token(
            &fleetmesh_ca::Identity::new("default", "default"),
            Duration::from_secs(3600),
        )
        .token;
    let config_dir = store.mesh.config_dir().to_path_buf();
    // The same meshd, now as a process of its own (same ports, directories and keys).
    store.mesh.stop_meshd().await;
    let first = MeshdProcess::start(&config_dir, &addresses).await;

    let versions: Versions =
        std::sync::Arc::new(parking_lot::Mutex::new(vec![Default::default(); SIMULATED]));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let endpoint =
        tonic::transport::Endpoint::from_shared(format!("http://{}", addresses.xds)).unwrap();
    let mut sidecars = Vec::new();
    for index in 0..SIMULATED {
        if index % SIMULATED_PER_CONNECTION == 0 {
            sidecars.push(endpoint.connect_lazy());
        }
    }
    let tasks: Vec<_> = (0..SIMULATED)
        .map(|index| {
            let channel = sidecars[index / SIMULATED_PER_CONNECTION].clone();
            tokio::spawn(simulated_sidecar(
                channel,
                token.clone(),
                index,
                versions.clone(),
                stopped.clone(),
            ))
        })
        .collect();
    let expected = eventually(
        "a simulated sidecar's config",
        Duration::from_secs(60),
        async || {
            let v = versions.lock()[0].clone();
            (!v.0.is_empty() && !v.1.is_empty()).then_some(v)
        },
    )
    .await;
    let connected = all_hold(&versions, &expected, "every simulated sidecar's config").await;
    let real_before = acked_versions(addresses.http, &store.frontend.node_id).await;

    let traffic = Traffic::start(&store.frontend, "http://reviews:9080/");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, cpu_before_kill) = usage(first.pid());
    first.kill();
    versions
        .lock()
        .iter_mut()
        .for_each(|v| *v = Default::default());
    let killed = Instant::now();
    let second = MeshdProcess::start(&config_dir, &addresses).await;
    let ready = killed.elapsed();
    let resynced = all_hold(&versions, &expected, "every simulated sidecar resynced").await + ready;
    let real_after = acked_versions(addresses.http, &store.frontend.node_id).await;
    let (peak_mib, cpu) = usage(second.pid());
    let report = traffic.stop().await;
    stop.send_replace(true);
    for task in tasks {
        task.await.unwrap();
    }

    println!(
        "kill -9 under {SIMULATED} simulated sidecars and 4 Envoys: all first synced in \
         {connected:?}; after the kill, meshd ready in {ready:?} and every sidecar back on the \
         same versions in {resynced:?}; the new meshd's peak RSS {peak_mib} MiB, CPU {cpu:?} \
         through the storm (the first one had used {cpu_before_kill:?} from its start \
         through the first connect); traffic {} requests, {} failed",
        report.sent,
        report.failures.len()
    );
    assert_eq!(
        real_before, real_after,
        "the Envoys resync to the same versions"
    );
    assert!(report.sent > 0 && report.failures.is_empty(), "{report:?}");
    second.kill();
}

/// A small tmpfs mounted at a directory for the test's duration (needs root, as the
/// real-node suites do), so that the directory's disk can be filled.
struct SmallDisk {
    at: std::path::PathBuf,
}

impl SmallDisk {
    fn mount(at: &std::path::Path) -> SmallDisk {
        std::fs::create_dir_all(at).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=512k,mode=0700", "tmpfs"])
            .arg(at)
            .status()
            .expect("mount runs");
        assert!(
            mounted.success(),
            "mounting a tmpfs at {} (root is needed)",
            at.display()
        );
        SmallDisk {
            at: at.to_path_buf(),
        }
    }

    /// Writes a file until the disk is full.
    fn fill(&self) {
        use std::io::Write;
        let mut filler = std::fs::File::create(self.at.join("filler")).unwrap();
        let block = [0u8; 4096];
        while filler.write_all(&block).is_ok() {}
        let _ = filler.sync_all();
    }

    fn free(&self) {
        std::fs::remove_file(self.at.join("filler")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.at)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ca_disk_full() {
    let _alone = ALONE.lock().await;
    let config_dir = tempfile::Builder::new()
        .prefix("fleetmesh-")
        .tempdir()
        .unwrap();
    let dirs = fleetmesh_meshd::MeshdConfig::for_dir(config_dir.path().to_path_buf());
    let disk = SmallDisk::mount(&dirs.ca_dir);

    // No CA yet, and no room for one: meshd refuses to start and says why.
    disk.fill();
    let refused = fleetmesh_meshd::Meshd::start(dirs.clone())
        .await
        .err()
        .expect("meshd cannot create its CA on a full disk");
    let message = format!("{refused:#}");
    assert!(
        message.contains(".ca") && message.contains("No space left"),
        "{message}"
    );
    let left: Vec<_> = std::fs::read_dir(&dirs.ca_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name != "filler")
        .collect();
    assert!(
        !left
            .iter()
            .any(|f| f.ends_with("key.pem") || f.ends_with(".tmp")),
        "no key and no partial file: {left:?}"
    );
    disk.free();

    let mut mesh = LocalMesh::start(Some(config_dir.path().to_path_buf()), XdsMode::Delta)
        .await
        .expect("meshd starts once there is room");
    mesh.cert_ttl = Duration::from_secs(10);
    let store = Bookstore::start_on(mesh).await;
    let token = store.mesh.meshd().issue_token(
        &fleetmesh_ca::Identity::new("default", "x"),
        Duration::from_secs(60),
    );

    disk.fill();
    let traffic = Traffic::start(&store.frontend, "http://reviews:9080/");
    let before = envoy_certificate_serials(&store.frontend);
    let renewed = eventually(
        "a renewal on a full disk",
        Duration::from_secs(30),
        async || {
            let now = envoy_certificate_serials(&store.frontend);
            (!now.is_empty() && now != before).then_some(now)
        },
    )
    .await;
    let full = store
        .mesh
        .meshd()
        .revoke_token(&token.id)
        .unwrap_err()
        .to_string();
    assert!(
        full.contains("revoked-tokens") && full.contains("No space left"),
        "{full}"
    );
    disk.free();
    store
        .mesh
        .meshd()
        .revoke_token(&token.id)
        .expect("a revocation once there is room");
    let report = traffic.stop().await;
    println!(
        "CA disk full: start refused with {message:?}; while full, the frontend's \
         certificate was renewed (serial {:?} to {:?}), a revocation was refused with \
         {full:?} and written once there was room; traffic {} requests, {} failed",
        before.first(),
        renewed.first(),
        report.sent,
        report.failures.len()
    );
    assert!(report.sent > 0 && report.failures.is_empty(), "{report:?}");
}

/// A TCP relay from `listen` to `target` that can stop passing bytes in both directions
/// (connections stay open, as across a lost network) and pass them again.
struct Relay {
    partitioned: tokio::sync::watch::Sender<bool>,
}

impl Relay {
    async fn start(listen: SocketAddr, target: SocketAddr) -> Relay {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .expect("the relay's port");
        let (partitioned, watch) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if *watch.borrow() {
                    // Nothing gets through, new connections included.
                    continue;
                }
                let Ok(server) = TcpStream::connect(target).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(pass(client_read, server_write, watch.clone()));
                tokio::spawn(pass(server_read, client_write, watch.clone()));
            }
        });
        Relay { partitioned }
    }

    fn partition(&self, partitioned: bool) {
        self.partitioned.send_replace(partitioned);
    }
}

/// Copies `from` to `to`, holding everything while partitioned.
async fn pass(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut partitioned: tokio::sync::watch::Receiver<bool>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        if partitioned.wait_for(|p| !p).await.is_err() {
            return;
        }
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            _ = partitioned.wait_for(|p| *p) => continue,
        };
        match read {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if partitioned.wait_for(|p| !p).await.is_err()
                    || to.write_all(&buffer[..n]).await.is_err()
                {
                    return;
                }
            }
        }
    }
}

/// The sum of meshd's `pilot_xds_pushes` over every type.
async fn pushes(http: SocketAddr) -> f64 {
    let text = reqwest::get(format!("http://{http}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with("pilot_xds_pushes{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Longer than meshd's HTTP/2 keepalive (30 s, 10 s to answer) takes to give up on the
/// proxies' connections.
const PARTITION: Duration = Duration::from_secs(45);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_between_proxies_and_meshd() {
    let _alone = ALONE.lock().await;
    let mut store = Bookstore::start(XdsMode::Delta).await;
    let meshd = store.mesh.meshd();
    // The proxies dial meshd's plaintext port; from now on the relay listens there and
    // meshd, a process of its own, serves behind it.
    let dialled = meshd.xds_address();
    let addresses = Addresses {
        xds: "127.0.0.1:0".parse().unwrap(),
        xds_tls: meshd.xds_tls_address(),
        http: meshd.http_address(),
        webhook: meshd.webhook_address(),
    };
    let config_dir = store.mesh.config_dir().to_path_buf();
    store.mesh.stop_meshd().await;
    let behind = Addresses {
        xds: std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap(),
        ..addresses
    };
    let meshd = MeshdProcess::start(&config_dir, &behind).await;
    let relay = Relay::start(dialled, behind.xds).await;
    let proxies = [
        &store.frontend,
        &store.reviews_v1,
        &store.reviews_v2,
        &store.ratings,
    ];
    let mut before = Vec::new();
    for proxy in proxies {
        before.push(acked_versions(behind.http, &proxy.node_id).await);
    }

    let traffic = Traffic::start(&store.frontend, "http://reviews:9080/");
    relay.partition(true);
    let pushes_before = pushes(behind.http).await;
    // A change meshd pushes while the proxies cannot hear it.
    store.mesh.write("reviews.yaml", &abort(418)).unwrap();
    tokio::time::sleep(PARTITION).await;
    let during = traffic.stop().await;

    let healed = Instant::now();
    relay.partition(false);
    let arrived = wait_for_status(&store.frontend, "http://reviews:9080/", 418).await;
    let mut after = Vec::new();
    for proxy in proxies {
        after.push(acked_versions(behind.http, &proxy.node_id).await);
    }
    let resynced = healed.elapsed();
    let pushed = pushes(behind.http).await - pushes_before;
    println!(
        "partition of {PARTITION:?}: traffic {} requests, {} failed; healed, the change \
         made meanwhile arrived in {arrived:?} and all 4 proxies were in sync after \
         {resynced:?}, with {pushed} pushes in all",
        during.sent,
        during.failures.len()
    );
    assert!(during.sent > 0 && during.failures.is_empty(), "{during:?}");
    assert_ne!(
        before, after,
        "the change made meanwhile is what they hold now"
    );
    // Each proxy: at most its four types again after a reconnect, and the change.
    assert!(pushed <= (proxies.len() * 4 * 2) as f64, "{pushed} pushes");
    drop(meshd);
}
