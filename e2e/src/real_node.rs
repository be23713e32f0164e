//! What the suites running real pods share: the local cluster's real node (kubelet,
//! containerd, CNI bridge, kube-proxy), the images it runs, meshd serving it as a hosted
//! control plane would, and `kubectl` in one namespace. Pods and Services get
//! 10.244.0.0/24 and 10.96.0.0/24 on the node's own bridge; no packet leaves the machine.
//!
//! Only one real node runs at a time (its bridge address is fixed): every suite uses the
//! same cluster name, so a node left by another suite's run is stopped first.

use crate::install_options;
use fleetmesh_cli::install;
use fleetmesh_cli::install::manifests::Plan;
use fleetmesh_inject::Channel;
use fleetmesh_kube::testing::{TestCluster, TestNamespace};
use fleetmesh_meshd::{Meshd, MeshdConfig};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The one cluster with a real node.
pub const CLUSTER: &str = "fleetmesh-real-node";
/// The node's address on its bridge: where pods reach meshd.
pub const NODE_IP: &str = "10.244.0.1";

/// The sample app's image, as `scripts/build-images` names it.
pub fn sample_image() -> String {
    fleetmesh_inject::channel::image(
        fleetmesh_inject::DEFAULT_HUB,
        "sample",
        env!("CARGO_PKG_VERSION"),
    )
}

/// The image archives the node loads: the proxy and the sample app.
pub fn images() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/images");
    let version = env!("CARGO_PKG_VERSION");
    let archives: Vec<_> = ["proxyv2", "sample"]
        .iter()
        .map(|image| dir.join(format!("{image}-{version}.oci.tar")))
        .collect();
    for archive in &archives {
        assert!(
            archive.exists(),
            "{} is missing: run scripts/build-images --profile debug",
            archive.display()
        );
    }
    archives
}

/// A fresh cluster with the real node, the images loaded.
pub fn start_cluster() -> TestCluster {
    let images = images();
    TestCluster::stop_named(CLUSTER).expect("a stale cluster stops");
    let cluster = TestCluster::start_with_real_node(CLUSTER).expect("the real node starts");
    cluster.load_images(&images).expect("images load");
    cluster
}

/// meshd as a hosted control plane would run for this cluster: webhooks on loopback for
/// the API server, xDS over TLS on the node's address for the pods.
pub async fn start_meshd(cluster: &TestCluster, dir: &Path) -> Meshd {
    start_meshd_with(cluster, dir, |_| {}).await
}

/// [`start_meshd`], with `adjust` changing its configuration first (a channel table, an
/// eviction pace, an earlier meshd's ports, which may take a moment to close).
pub async fn start_meshd_with(
    cluster: &TestCluster,
    dir: &Path,
    adjust: impl FnOnce(&mut MeshdConfig),
) -> Meshd {
    let mut config = MeshdConfig::for_dir(dir.to_path_buf());
    config.kubeconfig = Some(cluster.kubeconfig.clone());
    config.xds_tls_address = format!("{NODE_IP}:0").parse().unwrap();
    config.serving_hosts = vec!["127.0.0.1".into(), NODE_IP.into()];
    adjust(&mut config);
    fleetmesh_kube::testing::wait_for("meshd to start", Duration::from_secs(10), async || {
        Meshd::start(config.clone()).await.ok()
    })
    .await
    .expect("meshd starts")
}

/// `fleetmesh install` for this cluster (channel regular), with or without the CNI plugin.
pub async fn install(cluster: &TestCluster, meshd: &Meshd, cni_managed: bool) {
    let output = tempfile::tempdir().unwrap();
    let plan = Plan {
        project: "pods-project".into(),
        location: "local".into(),
        cluster: "real-node".into(),
        channel: Channel::Regular,
        cni_managed,
        hub: fleetmesh_inject::DEFAULT_HUB.into(),
    };
    let options = install_options(plan, cluster, meshd, output.path());
    install::run(&options).await.expect("install succeeds");
}

/// Host `shop.example.com` on port 80 of the guide's gateway (pods labelled `istio:
/// ingressgateway`), routed to `destination` (a DestinationRule-style destination's
/// fields, e.g. `host: reviews.NS.svc.cluster.local, subset: v2`).
pub fn shop_through_gateway(destination: &str) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: shop}}
spec:
  selector: {{istio: ingressgateway}}
  servers: [{{port: {{number: 80, name: http, protocol: HTTP}}, hosts: [shop.example.com]}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: shop}}
spec:
  hosts: [shop.example.com]
  gateways: [shop]
  http: [{{route: [{{destination: {{{destination}}}}}]}}]
"#
    )
}

/// `kubectl` in one namespace of the real node's cluster.
pub struct InNamespace<'a> {
    /// The cluster.
    pub cluster: &'a TestCluster,
    /// The namespace.
    pub namespace: String,
}

impl<'a> InNamespace<'a> {
    /// A new namespace of `cluster` (see [`TestNamespace::create`]), and `kubectl` in it.
    pub async fn create(cluster: &'a TestCluster, prefix: &str) -> (TestNamespace, Self) {
        let client = cluster.client().await.expect("a client of the cluster");
        let namespace = TestNamespace::create(&client, prefix)
            .await
            .unwrap_or_else(|e| panic!("namespace {prefix}: {e}"));
        let name = namespace.name.clone();
        (
            namespace,
            InNamespace {
                cluster,
                namespace: name,
            },
        )
    }

    /// `kubectl -n NAMESPACE ARGS...`.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
        let mut all = vec!["-n", self.namespace.as_str()];
        all.extend_from_slice(args);
        self.cluster.run_kubectl(&all, stdin)
    }

    /// `kubectl apply` of `yaml` in the namespace.
    pub fn apply(&self, yaml: &str) {
        self.kubectl(&["apply", "-f", "-"], Some(yaml))
            .unwrap_or_else(|e| panic!("kubectl apply: {e}"));
    }

    /// Labels the namespace for `revision`'s sidecars, as the guide does.
    pub fn label_revision(&self, revision: &str) {
        self.cluster
            .run_kubectl(
                &[
                    "label",
                    "namespace",
                    &self.namespace,
                    &format!("istio.io/rev={revision}"),
                    "--overwrite",
                ],
                None,
            )
            .unwrap_or_else(|e| panic!("labelling {}: {e}", self.namespace));
    }

    /// Labels the namespace for the regular channel's sidecars.
    pub fn inject(&self) {
        self.label_revision("asm-managed");
    }

    /// A bash script in Deployment `app`'s container of the same name.
    pub fn run_in(&self, app: &str, script: &str) -> Result<String, String> {
        let target = format!("deploy/{app}");
        self.kubectl(
            &["exec", &target, "-c", app, "--", "bash", "-c", script],
            None,
        )
    }

    /// A shell command in the client pod's app container (its traffic is captured).
    pub fn in_client(&self, script: &str) -> Result<String, String> {
        self.run_in("client", script)
    }

    /// Waits until Deployment `deployment` has rolled out.
    pub fn rolled_out(&self, deployment: &str) {
        self.kubectl(
            &[
                "rollout",
                "status",
                &format!("deploy/{deployment}"),
                "--timeout=180s",
            ],
            None,
        )
        .unwrap_or_else(|e| panic!("{deployment} did not become ready: {e}"));
    }

    /// Retries `script` in the client until `accept` takes its result.
    pub async fn until(
        &self,
        what: &str,
        script: &str,
        accept: impl Fn(&Result<String, String>) -> bool,
    ) -> Result<String, String> {
        self.until_in("client", what, script, accept).await
    }

    /// Retries `script` in Deployment `app` until `accept` takes its result.
    pub async fn until_in(
        &self,
        app: &str,
        what: &str,
        script: &str,
        accept: impl Fn(&Result<String, String>) -> bool,
    ) -> Result<String, String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let result = self.run_in(app, script);
            if accept(&result) {
                return result;
            }
            assert!(Instant::now() < deadline, "{what}: last result {result:?}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// The pods of `namespace` with `labels`.
pub async fn pods(client: &kube::Client, namespace: &str, labels: &str) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    api.list(&ListParams::default().labels(labels))
        .await
        .unwrap()
        .items
}

/// Each restarted container of `pods`, with why it last ended (what a failure must name).
pub fn restarted(pods: &[Pod]) -> Vec<String> {
    pods.iter()
        .flat_map(|pod| {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let statuses = pod
                .status
                .iter()
                .flat_map(|s| s.container_statuses.iter().flatten());
            statuses
                .filter(|c| c.restart_count > 0)
                .map(move |c| {
                    let ended = c.last_state.as_ref().and_then(|s| s.terminated.as_ref());
                    format!(
                        "{name}/{}: {} restarts, last ended {:?} (exit code {:?})",
                        c.name,
                        c.restart_count,
                        ended.and_then(|t| t.reason.clone()),
                        ended.map(|t| t.exit_code)
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A running pod's address.
pub fn pod_ip(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .expect("a running pod has an IP")
}
