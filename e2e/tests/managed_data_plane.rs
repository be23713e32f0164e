//! The managed data plane's status, as the seed checks it: after `fleetmesh install`
//! each revision has a DataPlaneControl whose state is unset (the seed's check says NOT
//! ready) until meshd has reconciled it (then it says ready); its proxy metrics count the
//! injected pods that opted in with the seed's annotation. Pod IPs are fake and never
//! receive a packet.

use fleetmesh_dataplane::DataPlaneControl;
use fleetmesh_inject::{Channel, InjectedBy, Revision, Settings, Template, template};
use fleetmesh_kube::testing::{TestCluster, TestNamespace, wait_for};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use std::process::Command;
use std::time::Duration;

/// The seed's readiness check, verbatim, with this cluster's kubectl.
const SEED_CHECK: &str = r#"if kubectl get dataplanecontrols -o custom-columns=REV:.spec.revision,STATUS:.status.state | grep rapid | grep -v none > /dev/null; then echo "Managed Data Plane is ready."; else echo "Managed Data Plane is NOT ready."; fi"#;

fn seed_check(cluster: &TestCluster) -> String {
    let kubectl = cluster.kubectl();
    let binary = std::path::Path::new(kubectl.get_program());
    let mut path = std::env::var("PATH").unwrap_or_default();
    if let Some(dir) = binary.parent().filter(|d| !d.as_os_str().is_empty()) {
        path = format!("{}:{path}", dir.display());
    }
    let output = Command::new("bash")
        .args(["-c", SEED_CHECK])
        .env("PATH", path)
        .env("KUBECONFIG", &cluster.kubeconfig)
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn kubectl(cluster: &TestCluster, args: &[&str]) {
    let status = cluster.kubectl().args(args).status().unwrap();
    assert!(status.success(), "kubectl {args:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_readiness_check_follows_the_controller() {
    // A cluster of its own: DataPlaneControls are cluster-wide.
    let cluster = TestCluster::start("fleetmesh-dataplane").expect("the local cluster starts");
    let client = cluster.client().await.unwrap();
    let objects = fleetmesh_cli::install::manifests::render(
        &fleetmesh_cli::install::manifests::Plan {
            project: "p".into(),
            location: "l".into(),
            cluster: "dataplane".into(),
            channel: Channel::Rapid,
            cni_managed: true,
        },
        &fleetmesh_cli::install::manifests::ControlPlane {
            webhook_url: "https://127.0.0.1:9".into(),
            ca_bundle: String::new(),
            xds_address: "127.0.0.1:9".into(),
            trust_domain: "cluster.local".into(),
        },
    );
    // The CRDs and istio-system (with the DataPlaneControls), as install applies them.
    fleetmesh_kube::testing::apply(&client, None, &objects[0].yaml)
        .await
        .unwrap();
    let controls: Api<DataPlaneControl> = Api::all(client.clone());
    wait_for(
        "the DataPlaneControl CRD",
        Duration::from_secs(30),
        async || controls.list(&Default::default()).await.ok(),
    )
    .await
    .unwrap();
    fleetmesh_kube::testing::apply(&client, None, &objects[1].yaml)
        .await
        .unwrap();
    assert_eq!(seed_check(&cluster), "Managed Data Plane is NOT ready.");

    // Pods of the rapid revision: one in a namespace the seed's command makes managed,
    // one that opts itself out there.
    let shop = TestNamespace::create(&client, "managed").await.unwrap();
    kubectl(
        &cluster,
        &[
            "annotate",
            "--overwrite",
            "namespace",
            &shop.name,
            r#"mesh.cloud.google.com/proxy={"managed":"true"}"#,
        ],
    );
    let settings = Settings {
        revision: Revision::of(Channel::Rapid),
        xds_address: "127.0.0.1:9".into(),
        trust_domain: "cluster.local".into(),
        cluster_id: "dataplane".into(),
        cni_managed: true,
        injected_by: InjectedBy::Webhook,
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), &shop.name);
    for (name, opt_out) in [("managed", false), ("opted-out", true)] {
        let mut pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "app", "image": "app:v1"}]},
        }))
        .unwrap();
        if opt_out {
            pod.metadata.annotations = Some(
                [(
                    "mesh.cloud.google.com/proxy".to_string(),
                    r#"{"managed":"false"}"#.to_string(),
                )]
                .into(),
            );
        }
        let injected = template::inject(&pod, Template::Sidecar, &settings).unwrap();
        pods.create(&PostParams::default(), &injected)
            .await
            .unwrap();
    }

    // meshd's controller reconciles: the seed's check turns ready.
    let mesh = fleetmesh_e2e::LocalMesh::start_with(
        None,
        fleetmesh_e2e::XdsMode::Delta,
        Some(cluster.kubeconfig.clone()),
    )
    .await
    .expect("meshd starts");
    wait_for(
        "the seed's check to say ready",
        Duration::from_secs(30),
        async || (seed_check(&cluster) == "Managed Data Plane is ready.").then_some(()),
    )
    .await
    .unwrap();
    let rapid = controls.get("asm-managed-rapid").await.unwrap();
    let status = rapid.status.unwrap();
    let metrics = status.proxy_metrics.unwrap();
    assert_eq!((metrics.managed, metrics.unmanaged), (1, 1), "{metrics:?}");
    assert!(metrics.namespaces_enabled >= 1);
    assert_eq!(status.proxy_target_basis_points, Some(10_000));
    assert_eq!(status.observed_generation, rapid.metadata.generation);
    drop(mesh);
    shop.delete().await.unwrap();
}
