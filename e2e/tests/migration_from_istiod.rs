//! Migrating from an in-cluster istiod (SPEC S18, S19), on the local cluster's real node:
//! istiod (`pilot-discovery`, built from the pinned Istio module) serves the cluster
//! first, with the mesh's CA as Istio plug-in certs (`cacerts`), so both control planes
//! sign under one root; its proxies are ADS clients (Istio's proxy image, its own Envoy
//! build, is not available here). fleetmesh is installed beside it, workloads on
//! fleetmesh's revision talk under steady traffic while istiod keeps serving its own,
//! the old namespace moves over, and once istiod has no proxy left the guide's removal
//! command takes it away: no request through fleetmesh's sidecars fails, no pod restarts.
//!
//! Needs the images (`scripts/build-images --profile debug`) and istiod
//! (`scripts/istio-build`; scripts/test runs both).

use fleetmesh_e2e::istiod::{Istiod, IstiodProxy, install_istio, installation};
use fleetmesh_e2e::load::{
    BudgetWatch, RequestLog, ServiceAddress, load_deployment, reviews_with_budget,
};
use fleetmesh_e2e::real_node::{InNamespace, install, pods, restarted, start_cluster, start_meshd};
use fleetmesh_kube::testing::TestCluster;
use std::time::Duration;

/// The guide's command for removing the old control plane, verbatim.
const REMOVE_ISTIOD: &[&str] = &[
    "delete",
    "Service,Deployment,HorizontalPodAutoscaler,PodDisruptionBudget",
    "istiod",
    "-n",
    "istio-system",
    "--ignore-not-found=true",
];

/// The mesh's CA, in Istio's `cacerts` layout: meshd's `--ca-dir` in `mesh_dir`,
/// created before either control plane starts.
fn mesh_ca(mesh_dir: &std::path::Path) -> std::path::PathBuf {
    let config = fleetmesh_meshd::MeshdConfig::for_dir(mesh_dir.to_path_buf());
    fleetmesh_ca::CertificateAuthority::load_or_create(
        &config.ca_dir,
        "cluster.local",
        Duration::from_secs(24 * 3600),
    )
    .expect("the mesh CA");
    config.ca_dir
}

/// Two proxies of an app in `namespace` on istiod, once istiod serves them.
async fn legacy_app(istiod: &Istiod, namespace: &str) -> Vec<IstiodProxy> {
    let mut proxies = Vec::new();
    for pod in ["legacy-0", "legacy-1"] {
        proxies.push(IstiodProxy::connect(istiod, namespace, pod, "legacy").await);
    }
    fleetmesh_e2e::eventually(
        "istiod serving its proxies",
        Duration::from_secs(60),
        async || {
            proxies
                .iter()
                .all(|p| !p.clusters().is_empty())
                .then_some(())
        },
    )
    .await;
    proxies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_istiod_without_a_failed_request() {
    let cluster = start_cluster();
    let client = cluster.client().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mesh_dir = dir.path().join("mesh");
    let cacerts = mesh_ca(&mesh_dir);
    install_istio(&cluster, &installation(None));
    let istiod_dir = dir.path().join("istiod");
    std::fs::create_dir_all(&istiod_dir).unwrap();
    let istiod = Istiod::start(&cluster, &istiod_dir, &cacerts).await;
    let (_legacy_ns, legacy_side) = InNamespace::create(&cluster, "legacy").await;
    let legacy = legacy_app(&istiod, &legacy_side.namespace).await;

    // fleetmesh beside it: install finds istiod and keeps what is Istio's.
    let meshd = start_meshd(&cluster, &mesh_dir).await;
    install(&cluster, &meshd, false).await;
    let (_server_ns, server) = InNamespace::create(&cluster, "fm-server").await;
    let (_client_ns, caller) = InNamespace::create(&cluster, "fm-client").await;
    server.inject();
    caller.inject();
    server.apply(&reviews_with_budget());
    server.rolled_out("reviews");
    let reviews = ServiceAddress::of(&cluster, &server.namespace, "reviews", 9080);
    caller.apply(&load_deployment("load", &reviews, "", true));
    caller.rolled_out("load");
    let requests = RequestLog::follow(&client, &caller.namespace, "app=load", "load");
    let budget = BudgetWatch::start(&client, &server.namespace, "reviews");
    requests
        .flows(20, "through fleetmesh's sidecars beside istiod")
        .await;

    side_by_side(&cluster, &istiod, &legacy, &server, &cacerts).await;
    requests.flows(20, "with istiod serving its own").await;

    // The legacy namespace moves to fleetmesh: its pods restart onto the new revision,
    // so istiod's proxies go; then the guide's removal command.
    legacy_side.inject();
    drop(legacy);
    fleetmesh_e2e::eventually(
        "istiod's proxy count at zero",
        Duration::from_secs(60),
        async || (istiod.connected().await == 0).then_some(()),
    )
    .await;
    cluster
        .run_kubectl(REMOVE_ISTIOD, None)
        .expect("the removal command");
    istiod.stop();
    assert!(
        cluster
            .run_kubectl(&["get", "deployment", "istiod", "-n", "istio-system"], None)
            .is_err(),
        "istiod's Deployment is gone"
    );
    requests.flows(40, "after istiod was removed").await;

    requests.assert_none_failed();
    budget.assert_held();
    for namespace in [&server.namespace, &caller.namespace] {
        let restarts = restarted(&pods(&client, namespace, "").await);
        assert!(
            restarts.is_empty(),
            "no pod of fleetmesh restarted: {restarts:?}"
        );
    }
    eprintln!(
        "beside istiod and after it: {} requests, none failed",
        requests.succeeded()
    );
    meshd.shutdown().await;
    cluster.stop().expect("the node stops");
}

/// Both control planes serve the one cluster without disturbing each other: istiod's
/// proxies learn fleetmesh's workloads' Service, and every namespace's root ConfigMap
/// holds the one root both sign under.
async fn side_by_side(
    cluster: &TestCluster,
    istiod: &Istiod,
    legacy: &[IstiodProxy],
    server: &InNamespace<'_>,
    cacerts: &std::path::Path,
) {
    let reviews = format!(
        "outbound|9080||reviews.{}.svc.cluster.local",
        server.namespace
    );
    fleetmesh_e2e::eventually(
        "istiod's proxies to see reviews",
        Duration::from_secs(60),
        async || {
            legacy
                .iter()
                .all(|p| p.clusters().contains(&reviews))
                .then_some(())
        },
    )
    .await;
    assert_eq!(istiod.connected().await, 2);
    let root = cluster
        .run_kubectl(
            &[
                "get",
                "configmap",
                "istio-ca-root-cert",
                "-n",
                &server.namespace,
                "-o",
                "jsonpath={.data.root-cert\\.pem}",
            ],
            None,
        )
        .unwrap();
    let ours = std::fs::read_to_string(cacerts.join("root-cert.pem")).unwrap();
    assert_eq!(root.trim(), ours.trim(), "one root for both control planes");
}
