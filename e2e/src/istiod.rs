//! An in-cluster Istio beside fleetmesh, for the suites that install into a cluster that
//! already runs one: what Istio's installation puts into istio-system, Istio's own CRDs
//! (from the pinned module), and istiod itself (`pilot-discovery`, built by
//! `scripts/istio-build`) serving the cluster from this machine as its in-cluster
//! Deployment would, with the Istio plug-in CA files (`cacerts`) it is given. Its
//! proxies are ADS clients ([`IstiodProxy`]): Istio's proxy image (its own Envoy build)
//! is not available here (`e2e/tests/istiod_on_upstream_envoy.rs` shows which settings
//! let upstream Envoy take istiod's config instead).

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use fleetmesh_kube::testing::TestCluster;
use parking_lot::Mutex;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What an Istio installation puts in istio-system besides its CRDs, as its charts name
/// them: MeshConfig and the istiod Deployment and Service (no replica: istiod runs on
/// this machine). With `root`, also a `default` tag webhook (never called here) and the
/// root ConfigMap holding `root`, as a running istiod of another CA leaves them.
pub fn installation(root: Option<&str>) -> String {
    let mut yaml = String::from(
        r#"
apiVersion: v1
kind: Namespace
metadata: {name: istio-system}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system, labels: {app: istiod}}
data:
  mesh: |
    accessLogFile: /dev/stdout
    trustDomain: cluster.local
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: istiod, namespace: istio-system, labels: {app: istiod}}
spec:
  replicas: 0
  selector: {matchLabels: {app: istiod}}
  template:
    metadata: {labels: {app: istiod}}
    spec:
      containers: [{name: discovery, image: "docker.io/istio/pilot:1.31.0"}]
---
apiVersion: v1
kind: Service
metadata: {name: istiod, namespace: istio-system, labels: {app: istiod}}
spec:
  selector: {app: istiod}
  ports: [{name: grpc-xds, port: 15010}, {name: https-dns, port: 15012}]
"#,
    );
    if let Some(root) = root {
        yaml.push_str(&format!(
            r#"
---
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {{name: istio-revision-tag-default, labels: {{istio.io/tag: default}}}}
webhooks:
- name: namespace.sidecar-injector.istio.io
  clientConfig: {{url: "https://127.0.0.1:1/inject"}}
  rules: [{{operations: [CREATE], apiGroups: [""], apiVersions: [v1], resources: [pods]}}]
  namespaceSelector: {{matchLabels: {{istio-injection: enabled}}}}
  failurePolicy: Fail
  sideEffects: None
  admissionReviewVersions: [v1]
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: istio-ca-root-cert, namespace: istio-system, labels: {{istio.io/config: "true"}}}}
data:
  root-cert.pem: {root:?}
"#
        ));
    }
    yaml
}

/// Applies Istio's CRDs (from the pinned module) and `installation` as Istio's
/// installer would (server-side, as field manager `istio-installer`).
pub fn install_istio(cluster: &TestCluster, installation: &str) {
    let crds = crate::istio_source().join("manifests/charts/base/files/crd-all.gen.yaml");
    let apply = [
        "apply",
        "--server-side",
        "--field-manager=istio-installer",
        "-f",
    ];
    let mut args = apply.to_vec();
    args.push(crds.to_str().unwrap());
    cluster
        .run_kubectl(&args, None)
        .expect("Istio's CRDs apply");
    let mut args = apply.to_vec();
    args.push("-");
    cluster
        .run_kubectl(&args, Some(installation))
        .expect("the Istio installation applies");
}

/// A loopback address no one listens on now (for istiod's ports, and its proxies' admin).
pub fn free_address() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}

/// istiod serving a cluster from this machine, its ports on loopback.
pub struct Istiod {
    child: std::process::Child,
    /// Plaintext xDS (istiod authenticates no one there).
    pub xds: SocketAddr,
    monitoring: SocketAddr,
    /// Its own version, as its proxies must name it.
    pub version: String,
    /// Its log.
    log: PathBuf,
}

impl Istiod {
    /// Starts istiod for `cluster` in `dir`, signing with the Istio plug-in CA files of
    /// `cacerts` (`ca-cert.pem`, `ca-key.pem`, `root-cert.pem`, `cert-chain.pem`), and
    /// waits until it is ready.
    pub async fn start(cluster: &TestCluster, dir: &Path, cacerts: &Path) -> Istiod {
        Self::start_with(cluster, dir, cacerts, &[]).await
    }

    /// [`Istiod::start`] with `settings` (istiod's environment variables) added.
    pub async fn start_with(
        cluster: &TestCluster,
        dir: &Path,
        cacerts: &Path,
        settings: &[(&str, &str)],
    ) -> Istiod {
        // Where scripts/istio-build keeps istiod (building it on first use).
        let build = crate::istio_build();
        let plugged = dir.join("etc/cacerts");
        std::fs::create_dir_all(&plugged).unwrap();
        for file in [
            "ca-cert.pem",
            "ca-key.pem",
            "root-cert.pem",
            "cert-chain.pem",
        ] {
            std::fs::copy(cacerts.join(file), plugged.join(file))
                .unwrap_or_else(|e| panic!("copying {file}: {e}"));
        }
        let (xds, http, monitoring) = (free_address(), free_address(), free_address());
        let log = dir.join("istiod.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = std::process::Command::new(build.join("bin/pilot-discovery"))
            .arg("discovery")
            .arg("--kubeconfig")
            .arg(&cluster.kubeconfig)
            .args(["--clusterID", "Kubernetes", "--domain", "cluster.local"])
            .arg(format!("--grpcAddr={xds}"))
            .arg(format!("--httpAddr={http}"))
            .arg(format!("--monitoringAddr={monitoring}"))
            .arg(format!("--httpsAddr={}", free_address()))
            .arg(format!("--secureGRPCAddr={}", free_address()))
            .env("POD_NAMESPACE", "istio-system")
            .env("POD_NAME", "istiod-beside")
            // It serves its webhooks by URL; it patches none.
            .env("INJECTION_WEBHOOK_CONFIG_NAME", "")
            .env("VALIDATION_WEBHOOK_CONFIG_NAME", "")
            .envs(settings.iter().copied())
            .current_dir(dir)
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("istiod starts");
        let version = std::fs::read_to_string(build.join("version"))
            .unwrap_or_default()
            .trim()
            .to_string();
        let mut istiod = Istiod {
            child,
            xds,
            monitoring,
            version,
            log,
        };
        istiod.wait_ready(http).await;
        istiod
    }

    async fn wait_ready(&mut self, http: SocketAddr) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("istiod exited ({status}); its log: {}", self.log.display());
            }
            let ready = reqwest::get(format!("http://{http}/ready")).await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "istiod not ready; see {}",
                self.log.display()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Proxies connected to istiod, as its own `pilot_xds` says.
    pub async fn connected(&self) -> u64 {
        let url = format!("http://{}/metrics", self.monitoring);
        let Ok(text) = reqwest::get(url).await.and_then(|r| r.error_for_status()) else {
            return 0;
        };
        let text = text.text().await.unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with("pilot_xds{") || l.starts_with("pilot_xds "))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    /// Stops istiod (as deleting its Deployment stops its pods).
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for Istiod {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A proxy of istiod's: an ADS stream naming a pod as Istio's agent does, holding the
/// clusters istiod last sent until dropped.
pub struct IstiodProxy {
    clusters: Arc<Mutex<Vec<String>>>,
    /// Its stream, until dropped.
    _stream: fleetmesh_kube::reflect::Tasks,
}

impl IstiodProxy {
    /// Connects to `istiod` as pod `pod` of `namespace` (labels `app: APP`).
    pub async fn connect(istiod: &Istiod, namespace: &str, pod: &str, app: &str) -> Self {
        let text = |s: &str| Value {
            kind: Some(Kind::StringValue(s.to_string())),
        };
        let labels = Struct {
            fields: [("app".to_string(), text(app))].into_iter().collect(),
        };
        let mut fields: std::collections::HashMap<String, Value> = [
            ("ISTIO_VERSION", istiod.version.as_str()),
            ("NAMESPACE", namespace),
            ("SERVICE_ACCOUNT", "default"),
            ("CLUSTER_ID", "Kubernetes"),
            ("INSTANCE_IPS", "10.255.0.1"),
            ("INTERCEPTION_MODE", "REDIRECT"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), text(v)))
        .collect();
        fields.insert(
            "LABELS".into(),
            Value {
                kind: Some(Kind::StructValue(labels)),
            },
        );
        let node = Node {
            id: format!("sidecar~10.255.0.1~{pod}.{namespace}~{namespace}.svc.cluster.local"),
            metadata: Some(Struct { fields }),
            ..Node::default()
        };
        let clusters = Arc::new(Mutex::new(Vec::new()));
        let seen = clusters.clone();
        let address = format!("http://{}", istiod.xds);
        let task = tokio::spawn(async move {
            let Ok(mut client) = AggregatedDiscoveryServiceClient::connect(address).await else {
                return;
            };
            let client = &mut client;
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            let cds = "type.googleapis.com/envoy.config.cluster.v3.Cluster".to_string();
            let first = DiscoveryRequest {
                node: Some(node),
                type_url: cds.clone(),
                ..DiscoveryRequest::default()
            };
            if tx.send(first).await.is_err() {
                return;
            }
            let requests = tokio_stream::wrappers::ReceiverStream::new(rx);
            let Ok(responses) = client.stream_aggregated_resources(requests).await else {
                return;
            };
            let mut responses = responses.into_inner();
            while let Ok(Some(response)) = responses.message().await {
                if response.type_url == cds {
                    let names = response
                        .resources
                        .iter()
                        .filter_map(|r| {
                            let cluster: envoy_types::pb::envoy::config::cluster::v3::Cluster =
                                prost::Message::decode(r.value.as_slice()).ok()?;
                            Some(cluster.name)
                        })
                        .collect();
                    *seen.lock() = names;
                }
                let ack = DiscoveryRequest {
                    type_url: response.type_url.clone(),
                    version_info: response.version_info.clone(),
                    response_nonce: response.nonce.clone(),
                    ..DiscoveryRequest::default()
                };
                if tx.send(ack).await.is_err() {
                    return;
                }
            }
        });
        IstiodProxy {
            clusters,
            _stream: vec![task].into(),
        }
    }

    /// The clusters istiod last sent it.
    pub fn clusters(&self) -> Vec<String> {
        self.clusters.lock().clone()
    }
}
