//! Multi-cluster endpoint discovery against two real kube-apiservers: meshd serves the
//! proxies of cluster 1; a remote secret made by `fleetmesh x create-remote-secret` for
//! cluster 2 and applied to cluster 1 gives them cluster 2's endpoints live, with cluster
//! 2's locality. A secret whose token is refused, or whose kubeconfig would run a
//! program on meshd's host, gets a Warning Event and changes nothing; the fixed secret is
//! picked up without a restart; deleting it takes the endpoints away. (Pod IPs are fake:
//! 198.18.0.0/22 in cluster 1, 198.18.4.0/22 in cluster 2; no packet is sent to them.)

use fleetmesh_cli::remote_secret::{self, RemoteSecretOptions};
use fleetmesh_e2e::*;
use fleetmesh_kube::testing::{TestCluster, TestNamespace, running_pod_ips, wait_for};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use std::collections::BTreeMap;
use std::time::Duration;

const REMOTE: &str = "cluster-2";
const SECRET: &str = "istio-remote-secret-cluster-2";

/// The reviews Service and `replicas` pods of it, and the install record naming where
/// the cluster runs.
fn reviews(namespace: &str, replicas: u32, location: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{name: {namespace}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: istio-system}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: fleetmesh-install, namespace: istio-system}}
data: {{location: {location}}}
---
apiVersion: v1
kind: Service
metadata: {{name: reviews, namespace: {namespace}}}
spec:
  selector: {{app: reviews}}
  ports: [{{name: http, port: 80, targetPort: 8080}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: reviews, namespace: {namespace}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: reviews}}}}
  template:
    metadata: {{labels: {{app: reviews}}}}
    spec:
      containers: [{{name: reviews, image: reviews:v1, ports: [{{containerPort: 8080}}]}}]
"#
    )
}

/// Envoy's endpoints of `cluster`, each with its locality's region (admin `/clusters`).
fn endpoint_regions(proxy: &Workload, cluster: &str) -> BTreeMap<String, String> {
    let (_, text) =
        fleetmesh_agent::process::admin_request(proxy.envoy.admin_socket(), "GET", "/clusters")
            .unwrap_or_default();
    let mut regions = BTreeMap::new();
    for line in text.lines() {
        let mut parts = line.split("::");
        if parts.next() != Some(cluster) {
            continue;
        }
        let (Some(host), Some("region"), Some(region)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        regions.insert(host.to_string(), region.to_string());
    }
    regions
}

/// The running reviews pods of `cluster` in `namespace`, as Envoy names their endpoints.
async fn pod_endpoints(cluster: &TestCluster, namespace: &str, count: usize) -> Vec<String> {
    let client = cluster.client().await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client, namespace);
    let ips = wait_for(
        "the reviews pods to run",
        Duration::from_secs(60),
        async || {
            let ips = running_pod_ips(&pods, "app=reviews").await;
            (ips.len() == count).then_some(ips)
        },
    )
    .await
    .unwrap();
    ips.into_iter().map(|ip| format!("{ip}:8080")).collect()
}

/// The notes of the Warning Events meshd recorded on the remote secret `name`.
async fn secret_warnings(cluster: &TestCluster, name: &str) -> Vec<String> {
    let client = cluster.client().await.unwrap();
    let events: Api<Event> = Api::namespaced(client, "istio-system");
    let list = events.list(&ListParams::default()).await.unwrap();
    list.items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .filter(|e| e.reason.as_deref() == Some("InvalidRemoteSecret"))
        .filter_map(|e| e.note)
        .collect()
}

/// The remote secret with its token replaced (a credential the cluster refuses).
fn with_token(secret: &str, token: &str) -> String {
    secret
        .lines()
        .map(|line| match line.split_once("token: ") {
            Some((indent, _)) => format!("{indent}token: {token}"),
            None => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Cluster 1 with meshd and a proxy of its reviews pod, cluster 2 with two more pods.
struct Fleet {
    one: TestCluster,
    two: TestCluster,
    namespace: TestNamespace,
    mesh: LocalMesh,
    proxy: Workload,
    /// The reviews EDS cluster.
    eds: String,
    /// Cluster 1's endpoint, and with cluster 2's, each with its region.
    only_local: BTreeMap<String, String>,
    both: BTreeMap<String, String>,
}

impl Fleet {
    async fn start() -> Fleet {
        let one = TestCluster::start("fleetmesh-mc-1").expect("cluster 1 starts");
        let two = TestCluster::start_with_pod_cidr("fleetmesh-mc-2", "198.18.4.0/22")
            .expect("cluster 2 starts");
        let namespace = TestNamespace::create(&one.client().await.unwrap(), "mc")
            .await
            .unwrap();
        let ns = namespace.name.clone();
        one.run_kubectl(&["apply", "-f", "-"], Some(&reviews(&ns, 1, "us-west1")))
            .unwrap();
        two.run_kubectl(&["apply", "-f", "-"], Some(&reviews(&ns, 2, "us-east1")))
            .unwrap();
        let in_region = |endpoints: Vec<String>, region: &str| {
            endpoints
                .into_iter()
                .map(|e| (e, region.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        let only_local = in_region(pod_endpoints(&one, &ns, 1).await, "us-west1");
        let mut both = only_local.clone();
        both.extend(in_region(pod_endpoints(&two, &ns, 2).await, "us-east1"));
        let mesh = LocalMesh::start_with(None, XdsMode::Delta, Some(one.kubeconfig.clone()))
            .await
            .expect("meshd watches cluster 1");
        let pods = Api::<Pod>::namespaced(one.client().await.unwrap(), &ns);
        let listed = pods
            .list(&ListParams::default().labels("app=reviews"))
            .await
            .unwrap();
        let pod = listed.items[0].metadata.name.clone().unwrap();
        let proxy = mesh
            .add_proxy("sidecar", &pod, &ns, "default", &[("app", "reviews")])
            .await
            .expect("Envoy starts");
        Fleet {
            eds: format!("outbound|80||reviews.{ns}.svc.cluster.local"),
            one,
            two,
            namespace,
            mesh,
            proxy,
            only_local,
            both,
        }
    }

    fn regions(&self) -> BTreeMap<String, String> {
        endpoint_regions(&self.proxy, &self.eds)
    }

    async fn expect(&self, want: &BTreeMap<String, String>, what: &str) {
        eventually(what, Duration::from_secs(60), async || {
            (self.regions() == *want).then_some(())
        })
        .await;
    }

    /// Applies `yaml` to cluster 1 and waits for a Warning Event on secret `name`.
    async fn warned(&self, yaml: &str, name: &str) -> String {
        self.one
            .run_kubectl(&["apply", "-f", "-"], Some(yaml))
            .unwrap();
        let notes = wait_for(
            "a Warning Event on the secret",
            Duration::from_secs(30),
            async || {
                let notes = secret_warnings(&self.one, name).await;
                (!notes.is_empty()).then_some(notes)
            },
        )
        .await
        .unwrap();
        notes[0].clone()
    }

    async fn stop(self) {
        assert_eq!(nacks(&self.mesh), 0);
        let ns = &self.namespace.name;
        self.two
            .run_kubectl(&["delete", "namespace", ns, "--wait=false"], None)
            .unwrap();
        self.namespace.delete().await.unwrap();
    }
}

/// The remote secret of cluster 2, as `fleetmesh x create-remote-secret` prints it.
async fn remote_secret_of(cluster: &TestCluster) -> String {
    remote_secret::create(&RemoteSecretOptions {
        kubeconfig: Some(cluster.kubeconfig.clone()),
        context: None,
        name: REMOTE.into(),
        server: None,
    })
    .await
    .expect("create-remote-secret")
}

/// `secret` as another cluster's, whose kubeconfig would run a program on meshd's host.
fn with_exec(secret: &str) -> String {
    secret
        .replace(SECRET, "istio-remote-secret-cluster-3")
        .replace(&format!("  {REMOTE}: |"), "  cluster-3: |")
        .replace(
            "token: ",
            "exec: {command: /bin/true, apiVersion: client.authentication.k8s.io/v1}\n        x-token: ",
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_secrets_join_a_second_clusters_endpoints() {
    let fleet = Fleet::start().await;
    fleet
        .expect(&fleet.only_local, "Envoy to have cluster 1's endpoint")
        .await;
    let secret = remote_secret_of(&fleet.two).await;

    // A token cluster 2 refuses: a Warning on the secret, and nothing changes.
    let refused = fleet
        .warned(&with_token(&secret, "not-a-token"), SECRET)
        .await;
    assert!(
        refused.contains(REMOTE) && !refused.contains("not-a-token"),
        "{refused}"
    );
    assert_eq!(fleet.regions(), fleet.only_local);

    // The good token, in the same secret: picked up live.
    fleet
        .one
        .run_kubectl(&["apply", "-f", "-"], Some(&secret))
        .unwrap();
    let listed = fleet
        .one
        .run_kubectl(&["get", "secret", SECRET, "-n", "istio-system"], None)
        .unwrap();
    let row: Vec<&str> = listed
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(row.get(1..3), Some(&["Opaque", "1"][..]), "{listed}");
    fleet
        .expect(
            &fleet.both,
            "Envoy to have cluster 2's endpoints with their locality",
        )
        .await;

    // A kubeconfig that would run a program on meshd's host: refused by field, and
    // cluster 2 keeps serving.
    let exec = with_exec(&secret);
    let warned = fleet.warned(&exec, "istio-remote-secret-cluster-3").await;
    assert!(warned.contains("exec"), "{warned}");
    assert_eq!(fleet.regions(), fleet.both);

    // Deleting the secret takes cluster 2's endpoints away.
    for name in [SECRET, "istio-remote-secret-cluster-3"] {
        fleet
            .one
            .run_kubectl(&["delete", "secret", name, "-n", "istio-system"], None)
            .unwrap();
    }
    fleet
        .expect(&fleet.only_local, "cluster 2's endpoints to go")
        .await;
    fleet.stop().await;
}
