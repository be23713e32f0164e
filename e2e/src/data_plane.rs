//! The managed data plane's suites: a meshd serving a local cluster (kwok pods: their
//! IPs are fake and receive no packet) that can be stopped and started again on the same
//! ports (install's webhooks call those), and what the suites apply and read.

use fleetmesh_dataplane::planner;
use fleetmesh_inject::labels;
use fleetmesh_kube::testing::{TestCluster, wait_for};
use fleetmesh_meshd::{Meshd, MeshdConfig};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Where a meshd listened, for the next one to listen there too.
pub struct Addresses {
    xds: SocketAddr,
    xds_tls: SocketAddr,
    http: SocketAddr,
    webhook: SocketAddr,
}

impl Addresses {
    /// Listen where the earlier meshd did.
    pub fn apply_to(&self, config: &mut MeshdConfig) {
        config.xds_address = self.xds;
        config.xds_tls_address = self.xds_tls;
        config.http_address = self.http;
        config.webhook_address = self.webhook;
    }

    /// `meshd`'s addresses.
    pub fn of(meshd: &Meshd) -> Addresses {
        Addresses {
            xds: meshd.xds_address(),
            xds_tls: meshd.xds_tls_address(),
            http: meshd.http_address(),
            webhook: meshd.webhook_address(),
        }
    }
}

/// meshd on `dir` and `cluster`, evicting one pod a second, with the channel table of
/// `channels` (a `--channels` file) if given; on the ports of an earlier meshd when
/// given.
pub async fn start_meshd(
    dir: &std::path::Path,
    cluster: &TestCluster,
    channels: Option<PathBuf>,
    earlier: Option<&Addresses>,
) -> Meshd {
    let mut config = MeshdConfig::for_dir(dir.join("mesh"));
    config.kubeconfig = Some(cluster.kubeconfig.clone());
    config.data_plane_eviction_pace = Duration::from_secs(1);
    config.channels = channels;
    if let Some(earlier) = earlier {
        earlier.apply_to(&mut config);
    }
    // The ports of a meshd just dropped close once its aborted tasks are.
    wait_for("meshd to start", Duration::from_secs(10), async || {
        Meshd::start(config.clone()).await.ok()
    })
    .await
    .expect("meshd starts")
}

/// A Deployment of `replicas` pods labelled `app: NAME`, with `pod_annotations` (YAML
/// flow mapping entries) on its pods.
pub fn deployment(name: &str, replicas: u32, pod_annotations: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}, annotations: {{{pod_annotations}}}}}\n    spec: {{containers: [{{name: {name}, image: {name}:v1}}]}}\n"
    )
}

/// A PodDisruptionBudget `web` with `rule` (`minAvailable: 2`, say) over `app: web`.
pub fn budget(rule: &str) -> String {
    format!(
        "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {{name: web}}\nspec:\n  {rule}\n  selector: {{matchLabels: {{app: web}}}}\n"
    )
}

/// The proxy version of each pod `selector` picks, sorted; "not ready" for a pod
/// starting or terminating (so `[v; 3]` means the Deployment has settled on v).
pub async fn proxy_versions(pods: &Api<Pod>, selector: &str) -> Vec<String> {
    let list = pods
        .list(&ListParams::default().labels(selector))
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    let mut versions: Vec<String> = list
        .iter()
        .map(|p| {
            let version = p
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(labels::PROXY_VERSION));
            match version {
                Some(version)
                    if p.metadata.deletion_timestamp.is_none() && planner::is_ready(p) =>
                {
                    version.clone()
                }
                _ => "not ready".into(),
            }
        })
        .collect();
    versions.sort();
    versions
}
