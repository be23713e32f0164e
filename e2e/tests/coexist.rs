//! Installing into a cluster that already runs Istio, against a real API server: Istio's
//! own CRDs (read from the pinned `istio.io/istio` module, where `istioctl install`
//! takes them), its MeshConfig, its istiod Deployment, its injector with the `default`
//! tag and its root ConfigMap are there first (`fleetmesh_e2e::istiod`). `fleetmesh install` says what it will
//! change before changing it, leaves every one of those as it is (schemas not narrowed,
//! MeshConfig kept, the default tag Istio's, the root Istio's), validates only objects
//! of its own revisions, and `fleetmesh uninstall` takes back only what install applied.
//! (kwok node only: nothing here runs a pod.)

use fleetmesh_cli::install::manifests::Plan;
use fleetmesh_cli::install::{self, coexist, uninstall};
use fleetmesh_e2e::{install_options, istiod};
use fleetmesh_inject::Channel;
use fleetmesh_kube::testing::TestCluster;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use kube::api::Api;

const CLUSTER: &str = "fleetmesh-coexist";

/// `kubectl get KIND NAME -o jsonpath=...`.
fn get(cluster: &TestCluster, what: &[&str], path: &str) -> String {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    let output = format!("jsonpath={path}");
    args.extend(["-o", &output]);
    cluster
        .run_kubectl(&args, None)
        .unwrap_or_else(|e| panic!("kubectl get {what:?}: {e}"))
}

/// The state of every object the Istio installation owns, to compare after.
fn istios_objects(cluster: &TestCluster) -> Vec<String> {
    let crd = ["crd", "destinationrules.networking.istio.io"];
    vec![
        get(cluster, &crd, "{.metadata.resourceVersion}"),
        // Istio's schema has localityLbSetting and friends; a narrower one would drop them.
        get(
            cluster,
            &crd,
            "{.spec.versions[0].schema.openAPIV3Schema.properties.spec.properties.trafficPolicy.properties.loadBalancer.properties.localityLbSetting.type}",
        ),
        get(
            cluster,
            &["configmap", "istio", "-n", "istio-system"],
            "{.data.mesh}",
        ),
        get(
            cluster,
            &["mutatingwebhookconfiguration", "istio-revision-tag-default"],
            "{.webhooks[0].clientConfig.url}",
        ),
        get(
            cluster,
            &["configmap", "istio-ca-root-cert", "-n", "istio-system"],
            "{.data.root-cert\\.pem}",
        ),
    ]
}

/// A fresh cluster with Istio installed, its root another CA's.
fn cluster_running_istio(dir: &std::path::Path) -> TestCluster {
    TestCluster::stop_named(CLUSTER).expect("a stale cluster stops");
    let cluster = TestCluster::start(CLUSTER).expect("the local cluster starts");
    let other_root = fleetmesh_ca::CertificateAuthority::load_or_create(
        &dir.join("istiod-ca"),
        "cluster.local",
        std::time::Duration::from_secs(3600),
    )
    .unwrap()
    .roots()
    .to_string();
    istiod::install_istio(&cluster, &istiod::installation(Some(&other_root)));
    cluster
}

/// What install finds and says before it changes anything; saying changes nothing.
async fn found_and_said(client: &kube::Client, options: &install::InstallOptions) -> String {
    let found = coexist::find(client, false).await.unwrap();
    let other = found.other_istio.clone().expect("the other Istio is found");
    assert!(
        other.contains("istiod") && other.contains("1.31.0"),
        "{other}"
    );
    assert!(other.contains("istio-revision-tag-default"), "{other}");
    let control_plane = fleetmesh_cli::install::meshd_api::MeshdApi::new(
        &options.meshd_url,
        &options.admin_token_file,
    )
    .install_info(None)
    .await
    .unwrap();
    let rendered = install::manifests::render(&options.plan, &control_plane, &found);
    let applier = fleetmesh_kube::apply::Applier::new(client.clone(), "fleetmesh-install")
        .await
        .unwrap();
    coexist::changes(
        client,
        &applier,
        &rendered,
        &found,
        &control_plane.ca_bundle,
    )
    .await
    .unwrap()
    .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_beside_istio_changes_nothing_istio_owns() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster_running_istio(dir.path());
    let client = cluster.client().await.unwrap();
    let before = istios_objects(&cluster);
    assert_eq!(before[1], "object", "Istio's schema: {before:?}");

    let meshd = fleetmesh_e2e::data_plane::start_meshd(dir.path(), &cluster, None, None).await;
    let plan = Plan {
        project: "beside".into(),
        location: "local".into(),
        cluster: "beside".into(),
        channel: Channel::Rapid,
        cni_managed: false,
        hub: fleetmesh_inject::DEFAULT_HUB.into(),
    };
    let options = install_options(plan, &cluster, &meshd, &dir.path().join("out"));
    let said = found_and_said(&client, &options).await;
    for expected in [
        "CustomResourceDefinition destinationrules.networking.istio.io: leave as it is (managed by istio-installer",
        "ConfigMap istio-system/istio: leave as it is",
        "MutatingWebhookConfiguration istio-sidecar-injector-asm-managed-rapid: create",
        "the default tag stays with the other Istio",
        "warning: the other Istio's root is not the mesh's",
    ] {
        assert!(said.contains(expected), "missing {expected:?} in:\n{said}");
    }
    assert_eq!(istios_objects(&cluster), before, "saying changed nothing");

    let summary = install::run(&options).await.expect("install succeeds");
    let left = said.matches("leave as it is").count();
    assert!(
        left >= 11,
        "Istio's CRDs, namespace and MeshConfig:\n{said}"
    );
    assert_eq!(summary.kept, left, "install kept what it said it would");
    // meshd publishes its roots to every namespace, but not over istiod's.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(
        istios_objects(&cluster),
        before,
        "nothing Istio owns changed"
    );
    let ours: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let validator = ours.get("istio-validator-fleetmesh").await.unwrap();
    let selector = validator.webhooks.unwrap()[0]
        .object_selector
        .clone()
        .unwrap();
    let scoped = selector.match_expressions.unwrap();
    assert_eq!(scoped[0].key, "istio.io/rev", "only our revisions' objects");
    let injectors = ["mutatingwebhookconfigurations"];
    let names = "{.items[*].metadata.name}";
    assert!(get(&cluster, &injectors, names).contains("istio-sidecar-injector-asm-managed-rapid"));

    // Uninstall takes back what install applied, and nothing of Istio's.
    let removal = uninstall::run(&uninstall::UninstallOptions {
        purge: true,
        verbose: false,
        kubeconfig: Some(cluster.kubeconfig.clone()),
        context: None,
    })
    .await
    .unwrap();
    assert!(removal.deleted > 0, "{removal:?}");
    assert!(
        !get(&cluster, &injectors, names).contains("asm-managed"),
        "ours are gone"
    );
    assert_eq!(
        istios_objects(&cluster),
        before,
        "even --purge keeps Istio's"
    );
    meshd.shutdown().await;
}
