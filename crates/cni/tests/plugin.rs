//! The CNI plugin as a container runtime calls it, against a real API server: for a pod
//! whose injected proxy captures traffic it programs the redirect in the pod's network
//! namespace (one this test creates with `unshare`); a gateway pod and a pod without a
//! proxy are left alone; the previous plugin's result is passed on. Needs root,
//! iptables and nsenter.

use fleetmesh_inject::{Channel, InjectedBy, Revision, Settings, Template, template};
use fleetmesh_kube::testing::{TestCluster, TestNamespace};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use std::io::Write;
use std::process::{Child, Command, Stdio};

fn settings() -> Settings {
    Settings {
        revision: Revision::of(Channel::Rapid),
        xds_address: "127.0.0.1:15010".into(),
        trust_domain: "cluster.local".into(),
        cluster_id: "cni".into(),
        cni_managed: true,
        injected_by: InjectedBy::Webhook,
        proxy_version: None,
        hub: fleetmesh_inject::DEFAULT_HUB.into(),
        delta_xds: false,
    }
}

fn pod(value: Value) -> Pod {
    serde_json::from_value(value).unwrap()
}

/// A process in a network namespace of its own, standing in for the pod's sandbox.
struct Sandbox(Child);

impl Sandbox {
    fn start() -> Sandbox {
        Sandbox(
            Command::new("unshare")
                .args(["--net", "sleep", "120"])
                .spawn()
                .expect("unshare runs"),
        )
    }

    fn netns(&self) -> String {
        format!("/proc/{}/ns/net", self.0.id())
    }

    fn nat_rules(&self) -> String {
        let output = Command::new("nsenter")
            .arg(format!("--net={}", self.netns()))
            .args(["iptables-save", "-t", "nat"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn add(cluster: &TestCluster, namespace: &str, name: &str, sandbox: &Sandbox) -> Value {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../images/proxyv2/fleetmesh-iptables")
        .canonicalize()
        .unwrap();
    let conf = json!({
        "cniVersion": "1.0.0",
        "name": "kindnet",
        "type": "fleetmesh-cni",
        "kubeconfig": cluster.kubeconfig,
        "iptables": script,
        "prevResult": {"cniVersion": "1.0.0", "ips": [{"address": "198.18.0.9/22"}]},
    });
    let mut child = Command::new(env!("CARGO_BIN_EXE_fleetmesh-cni"))
        .env("CNI_COMMAND", "ADD")
        .env("CNI_NETNS", sandbox.netns())
        .env("CNI_IFNAME", "eth0")
        .env("CNI_CONTAINERID", "test")
        .env(
            "CNI_ARGS",
            format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name}"),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{name}: {stdout}");
    serde_json::from_str(&stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_only_pods_whose_proxy_captures_traffic() {
    let cluster = TestCluster::start("fleetmesh-kube-tests").expect("the local cluster starts");
    let client = cluster.client().await.unwrap();
    let namespace = TestNamespace::create(&client, "cni").await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace.name);
    let app = pod(json!({
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "web", "image": "web:v1"}]},
    }));
    let gateway = pod(json!({
        "metadata": {"name": "gw", "labels": {"istio": "ingressgateway"},
                     "annotations": {"inject.istio.io/templates": "gateway"}},
        "spec": {"containers": [{"name": "istio-proxy", "image": "auto"}]},
    }));
    let plain = pod(json!({
        "metadata": {"name": "plain"},
        "spec": {"containers": [{"name": "plain", "image": "plain:v1"}]},
    }));
    for object in [
        template::inject(&app, Template::Sidecar, &settings()).unwrap(),
        template::inject(&gateway, Template::Gateway, &settings()).unwrap(),
        plain,
    ] {
        pods.create(&PostParams::default(), &object).await.unwrap();
    }

    let sandboxes: Vec<Sandbox> = (0..3).map(|_| Sandbox::start()).collect();
    std::thread::sleep(std::time::Duration::from_millis(200));
    for (name, sandbox) in ["web", "gw", "plain"].iter().zip(&sandboxes) {
        let result = add(&cluster, &namespace.name, name, sandbox);
        assert_eq!(
            result["ips"][0]["address"], "198.18.0.9/22",
            "{name}: {result}"
        );
    }
    let [web, gw, plain] = [0, 1, 2].map(|i| sandboxes[i].nat_rules());
    assert!(
        web.contains("-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001"),
        "{web}"
    );
    assert!(web.contains("--dport 15020 -j RETURN"), "{web}");
    assert!(!gw.contains("ISTIO"), "a gateway captures nothing: {gw}");
    assert!(!plain.contains("ISTIO"), "{plain}");

    // An unknown pod is an error the runtime reports.
    let missing = Command::new(env!("CARGO_BIN_EXE_fleetmesh-cni"))
        .env("CNI_COMMAND", "ADD")
        .env("CNI_NETNS", sandboxes[2].netns())
        .env(
            "CNI_ARGS",
            format!("K8S_POD_NAMESPACE={};K8S_POD_NAME=nope", namespace.name),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut missing = missing;
    write!(
        missing.stdin.take().unwrap(),
        "{}",
        json!({"cniVersion": "1.0.0", "kubeconfig": cluster.kubeconfig})
    )
    .unwrap();
    let output = missing.wait_with_output().unwrap();
    assert!(!output.status.success());
    let error: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(
        error["details"].as_str().unwrap().contains("nope"),
        "{error}"
    );
    namespace.delete().await.unwrap();
}
