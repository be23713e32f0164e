//! The managed data plane against a real API server, controller-manager and kwok: each
//! revision's DataPlaneControl is unset (the seed's check says NOT ready) until meshd has
//! reconciled it (then ready), its metrics count the pods that opted in with the seed's
//! annotation; a new proxy version rolls out by PDB-respecting evictions, one pod at a
//! time; a PDB that allows nothing shows as an Error. Pod IPs are fake and never receive
//! a packet.

use fleetmesh_cli::install::manifests::Plan;
use fleetmesh_cli::install::{self, InstallOptions};
use fleetmesh_dataplane::DataPlaneControl;
use fleetmesh_dataplane::control::State;
use fleetmesh_dataplane::planner;
use fleetmesh_inject::{Channel, InjectedBy, Revision, Settings, Template, template};
use fleetmesh_kube::testing::{TestCluster, TestNamespace, wait_for};
use fleetmesh_meshd::{Meshd, MeshdConfig};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
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
    if let Err(error) = cluster.run_kubectl(args, None) {
        panic!("kubectl {args:?}: {error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_readiness_check_follows_the_controller() {
    // A cluster of its own: DataPlaneControls are cluster-wide.
    let cluster = TestCluster::start("fleetmesh-dataplane").expect("the local cluster starts");
    let client = cluster.client().await.unwrap();
    let objects = fleetmesh_cli::install::manifests::render(
        &plan(),
        &fleetmesh_cli::install::manifests::ControlPlane {
            webhook_url: "https://127.0.0.1:9".into(),
            ca_bundle: String::new(),
            xds_address: "127.0.0.1:9".into(),
            trust_domain: "cluster.local".into(),
        },
    );
    // A cluster reused from an earlier run: start over without its DataPlaneControls and
    // webhooks (those would call a meshd that is gone).
    let webhooks: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let installed = ListParams::default().labels("fleetmesh.io/managed-by=fleetmesh-install");
    let _ = webhooks
        .delete_collection(&DeleteParams::default(), &installed)
        .await;
    let _ = Api::<DataPlaneControl>::all(client.clone())
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await;
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
    // Namespaces an earlier run left behind would count too.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for stale in namespaces.list(&ListParams::default()).await.unwrap().items {
        let name = stale.metadata.name.unwrap_or_default();
        if name.starts_with("managed-") {
            let _ = namespaces.delete(&name, &DeleteParams::default()).await;
        }
    }
    wait_for(
        "earlier runs' namespaces to be gone",
        Duration::from_secs(120),
        async || {
            let list = namespaces.list(&ListParams::default()).await.ok()?.items;
            let left = list
                .iter()
                .filter_map(|n| n.metadata.name.as_deref())
                .any(|n| n.starts_with("managed-"));
            (!left).then_some(())
        },
    )
    .await
    .unwrap();
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
        proxy_version: None,
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), &shop.name);
    for (name, opt_in) in [
        ("managed", None),
        ("opted-out", Some(r#"{"managed":"false"}"#)),
        ("malformed", Some("yes please")),
    ] {
        let mut pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "app", "image": "app:v1"}]},
        }))
        .unwrap();
        if let Some(value) = opt_in {
            pod.metadata.annotations =
                Some([("mesh.cloud.google.com/proxy".to_string(), value.to_string())].into());
        }
        let injected = template::inject(&pod, Template::Sidecar, &settings).unwrap();
        pods.create(&PostParams::default(), &injected)
            .await
            .unwrap();
    }

    // meshd's controller reconciles: the seed's check turns ready. (Evictions paced at
    // one a second, for the rollout below.)
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("mesh")).unwrap();
    let mut config = MeshdConfig::for_dir(dir.path().join("mesh"));
    config.kubeconfig = Some(cluster.kubeconfig.clone());
    config.data_plane_eviction_pace = Duration::from_secs(1);
    let meshd = Meshd::start(config).await.expect("meshd starts");
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
    // Bare pods: nothing would replace them, so the managed data plane leaves them be.
    assert_eq!((metrics.managed, metrics.unmanaged), (0, 3), "{metrics:?}");
    // The malformed annotation is explained on the pod.
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(client.clone(), &shop.name);
    wait_for(
        "an InvalidProxyAnnotation Event on the pod",
        Duration::from_secs(30),
        async || {
            let list = events.list(&ListParams::default()).await.ok()?.items;
            list.iter()
                .find(|e| {
                    e.reason.as_deref() == Some("InvalidProxyAnnotation")
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("malformed")
                })
                .map(|_| ())
        },
    )
    .await
    .unwrap();
    assert!(metrics.namespaces_enabled >= 1);
    assert_eq!(status.proxy_target_basis_points, Some(10_000));
    assert_eq!(status.observed_generation, rapid.metadata.generation);

    // A rollout: install's webhooks inject the DataPlaneControl's version, a Deployment
    // of 3 behind a PDB of minAvailable 2 runs version A; bumping the version to B evicts
    // its pods one at a time, never below 2 Ready, until all run B.
    let output = tempfile::tempdir().unwrap();
    install::run(&InstallOptions {
        plan: plan(),
        output_dir: output.path().to_path_buf(),
        verbose: false,
        register: false,
        kubeconfig: Some(cluster.kubeconfig.clone()),
        context: None,
        meshd_url: format!("http://{}", meshd.http_address()),
    })
    .await
    .expect("install succeeds");
    kubectl(
        &cluster,
        &[
            "label",
            "namespace",
            &shop.name,
            "istio-injection-",
            "istio.io/rev=asm-managed-rapid",
            "--overwrite",
        ],
    );
    shop.apply(&format!("{WEB}---\n{}", budget("minAvailable: 2")))
        .await
        .unwrap();
    let version_a = Revision::of(Channel::Rapid).proxy_version;
    wait_for(
        "3 Ready web pods on version A",
        Duration::from_secs(60),
        async || (web_versions(&pods).await == [version_a; 3]).then_some(()),
    )
    .await
    .unwrap();
    set_version(&controls, "9.9.9-b").await;
    let started = std::time::Instant::now();
    let mut fewest_ready = 3;
    loop {
        let list = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .unwrap()
            .items;
        let ready = list
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none() && planner::is_ready(p))
            .count();
        fewest_ready = fewest_ready.min(ready);
        if web_versions(&pods).await == ["9.9.9-b"; 3] {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the rollout did not finish"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        fewest_ready >= 2,
        "the PDB held: never fewer than 2 Ready (saw {fewest_ready})"
    );
    let metrics = wait_for(
        "the DataPlaneControl to be Ready on B",
        Duration::from_secs(30),
        async || {
            let status = controls.get("asm-managed-rapid").await.ok()?.status?;
            (status.state == Some(State::Ready)).then_some(status.proxy_metrics?)
        },
    )
    .await
    .unwrap();
    assert_eq!((metrics.managed, metrics.unmanaged), (3, 3), "{metrics:?}");
    assert_eq!(seed_check(&cluster), "Managed Data Plane is ready.");
    // One evictor per cluster: this meshd holds the Lease.
    let lease = Api::<Lease>::namespaced(client.clone(), "istio-system")
        .get("fleetmesh-data-plane")
        .await
        .unwrap();
    let holder = lease.spec.unwrap().holder_identity.unwrap();
    assert!(holder.starts_with("meshd-"), "{holder}");
    let (bare, opted_out) = (
        pods.get("managed").await.unwrap(),
        pods.get("opted-out").await.unwrap(),
    );
    assert!(
        bare.metadata.deletion_timestamp.is_none()
            && opted_out.metadata.deletion_timestamp.is_none(),
        "bare pods are never evicted"
    );

    // A PDB that allows no disruption: every eviction is refused, the status says why.
    shop.apply(&budget("maxUnavailable: 0")).await.unwrap();
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &shop.name);
    wait_for(
        "the disruption controller to see the new PDB",
        Duration::from_secs(30),
        async || {
            let pdb = budgets.get("web").await.ok()?;
            let status = pdb.status?;
            (status.observed_generation == pdb.metadata.generation
                && status.disruptions_allowed == 0)
                .then_some(())
        },
    )
    .await
    .unwrap();
    set_version(&controls, "9.9.9-c").await;
    let error = wait_for(
        "the DataPlaneControl to report the PDB",
        Duration::from_secs(60),
        async || {
            let status = controls.get("asm-managed-rapid").await.ok()?.status?;
            (status.state == Some(State::Error)).then_some(status.error_details?.message)
        },
    )
    .await
    .unwrap();
    assert_eq!(error, "PodDisruptionBudgets are preventing upgrade");
    assert_eq!(
        web_versions(&pods).await,
        ["9.9.9-b"; 3],
        "nothing was evicted"
    );
    meshd.shutdown().await;
    shop.delete().await.unwrap();
}

const WEB: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: web:v1}]}
"#;

fn budget(rule: &str) -> String {
    format!(
        "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {{name: web}}\nspec:\n  {rule}\n  selector: {{matchLabels: {{app: web}}}}\n"
    )
}

fn plan() -> Plan {
    Plan {
        project: "p".into(),
        location: "l".into(),
        cluster: "dataplane".into(),
        channel: Channel::Rapid,
        cni_managed: true,
    }
}

/// The proxy versions of the Ready, not terminating web pods, sorted.
async fn web_versions(pods: &Api<Pod>) -> Vec<String> {
    let list = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    let mut versions: Vec<String> = list
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && planner::is_ready(p))
        .filter_map(|p| {
            p.metadata
                .labels
                .as_ref()?
                .get("fleetmesh.io/proxy-version")
                .cloned()
        })
        .collect();
    versions.sort();
    versions
}

async fn set_version(controls: &Api<DataPlaneControl>, version: &str) {
    let patch = serde_json::json!({"spec": {"proxyVersion": version}});
    controls
        .patch(
            "asm-managed-rapid",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .unwrap();
}
