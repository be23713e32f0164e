//! `fleetmesh uninstall` against a real API server: a cluster whose meshd is gone refuses
//! pods in its injected namespaces (the injection webhook fails closed); uninstall, which
//! needs only the cluster, removes the webhooks first and then the rest, and pods are
//! created again. CRDs that still have objects (a VirtualService) and the istio-system
//! namespace stay, unless `--purge`. (kwok pods: their IPs never receive a packet.)

use fleetmesh_cli::install::manifests::Plan;
use fleetmesh_cli::install::uninstall::{self, UninstallOptions};
use fleetmesh_e2e::data_plane::start_meshd;
use fleetmesh_e2e::install_options;
use fleetmesh_inject::Channel;
use fleetmesh_kube::testing::{TestCluster, TestNamespace, wait_for};
use std::time::Duration;

const VIRTUAL_SERVICE: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: kept}
spec:
  hosts: [kept.example.com]
  http: [{route: [{destination: {host: kept.example.com}}]}]
"#;

/// `kubectl run NAME` in `namespace`: whether the API server admitted the pod.
fn run_pod(cluster: &TestCluster, namespace: &str, name: &str) -> Result<(), String> {
    let args = [
        "run",
        name,
        "-n",
        namespace,
        "--image=app:v1",
        "--restart=Never",
    ];
    cluster.run_kubectl(&args, None).map(|_| ())
}

/// Whether `kubectl get` finds `what` (kind/name, in `namespace` if given).
fn exists(cluster: &TestCluster, what: &str, namespace: Option<&str>) -> bool {
    let mut args = vec!["get", what];
    if let Some(namespace) = namespace {
        args.extend(["-n", namespace]);
    }
    cluster.run_kubectl(&args, None).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uninstall_is_the_way_out_for_a_cluster_whose_meshd_is_gone() {
    let cluster = TestCluster::start("fleetmesh-uninstall").expect("the local cluster starts");
    let client = cluster.client().await.unwrap();
    // A cluster reused from a run that purged: its istio-system may still be going.
    let phase = [
        "get",
        "namespace",
        "istio-system",
        "-o",
        "jsonpath={.status.phase}",
    ];
    wait_for(
        "istio-system not terminating",
        Duration::from_secs(60),
        async || {
            let phase = cluster.run_kubectl(&phase, None).unwrap_or_default();
            (phase != "Terminating").then_some(())
        },
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let meshd = start_meshd(dir.path(), &cluster, None, None).await;
    let plan = Plan {
        project: "gone".into(),
        location: "local".into(),
        cluster: "gone".into(),
        channel: Channel::Regular,
        cni_managed: true,
        hub: fleetmesh_inject::DEFAULT_HUB.into(),
    };
    let options = install_options(plan, &cluster, &meshd, &dir.path().join("install"));
    fleetmesh_cli::install::run(&options)
        .await
        .expect("install succeeds");
    let shop = TestNamespace::create(&client, "uninstall").await.unwrap();
    let label = ["label", "namespace", &shop.name, "istio.io/rev=asm-managed"];
    cluster.run_kubectl(&label, None).unwrap();
    shop.apply(VIRTUAL_SERVICE).await.unwrap();
    run_pod(&cluster, &shop.name, "while-served").expect("injected while meshd serves");

    // meshd gone for good: the injection webhook refuses pods.
    meshd.shutdown().await;
    let refused = run_pod(&cluster, &shop.name, "while-gone");
    assert!(refused.is_err(), "fails closed");

    let mut options = UninstallOptions {
        purge: false,
        verbose: true,
        kubeconfig: Some(cluster.kubeconfig.clone()),
        context: None,
    };
    let removal = uninstall::run(&options).await.expect("uninstall succeeds");
    assert!(removal.deleted > 10, "{removal:?}");
    run_pod(&cluster, &shop.name, "after-uninstall").expect("pods are created again");
    for gone in [
        "mutatingwebhookconfigurations",
        "validatingwebhookconfigurations",
    ] {
        let listed = cluster
            .run_kubectl(
                &["get", gone, "-l", "fleetmesh.io/managed-by", "-o", "name"],
                None,
            )
            .unwrap();
        assert!(listed.trim().is_empty(), "{gone}: {listed}");
    }
    assert!(!exists(
        &cluster,
        "daemonset/istio-cni-node",
        Some("kube-system")
    ));
    assert!(!exists(&cluster, "clusterrole/fleetmesh-meshd", None));
    assert!(!exists(
        &cluster,
        "crd/dataplanecontrols.mesh.cloud.google.com",
        None
    ));
    // What the user's objects need stays.
    assert!(exists(
        &cluster,
        "crd/virtualservices.networking.istio.io",
        None
    ));
    assert!(exists(&cluster, "virtualservice/kept", Some(&shop.name)));
    assert!(exists(&cluster, "namespace/istio-system", None));
    assert!(
        removal
            .kept
            .iter()
            .any(|k| k.contains("virtualservices.networking.istio.io")),
        "{:?}",
        removal.kept
    );

    // --purge takes the rest; a second run finds nothing more to delete.
    options.purge = true;
    uninstall::run(&options).await.expect("purge succeeds");
    // The API server deletes a CRD's objects before the CRD.
    let crd = "crd/virtualservices.networking.istio.io";
    wait_for(
        "the purged CRD to be gone",
        Duration::from_secs(60),
        async || (!exists(&cluster, crd, None)).then_some(()),
    )
    .await
    .unwrap();
    let again = uninstall::run(&options).await.expect("a re-run succeeds");
    assert!(again.kept.is_empty(), "{again:?}");
}
