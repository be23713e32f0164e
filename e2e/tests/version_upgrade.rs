//! Versions that move with meshd (S9, S12), against a real API server, controller-manager
//! and kwok: meshd release A (its channel table pins proxy A) serves a cluster and sets
//! the revision's DataPlaneControl, which install leaves without a version. Upgraded to
//! release B, meshd moves the DataPlaneControl to B: managed pods roll to B by
//! evictions, one at a time within their PDB, and a pod that is not managed keeps A until
//! its next restart (`kubectl rollout restart`), which gives it B. Release A started
//! again (meshd rolled back) keeps B: new pods get B. Pod IPs are fake and never receive
//! a packet.

use fleetmesh_cli::install;
use fleetmesh_cli::install::manifests::Plan;
use fleetmesh_dataplane::DataPlaneControl;
use fleetmesh_e2e::data_plane::{Addresses, budget, deployment, proxy_versions, start_meshd};
use fleetmesh_e2e::install_options;
use fleetmesh_inject::Channel;
use fleetmesh_kube::testing::{TestCluster, TestNamespace, wait_for};
use fleetmesh_meshd::Meshd;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams};
use std::path::{Path, PathBuf};
use std::time::Duration;

const REVISION: &str = "asm-managed-rapid";
const A: &str = "1.0.0-a";
const B: &str = "1.1.0-b";

/// A `--channels` file pinning the rapid revision to `version`.
fn channels(dir: &Path, version: &str) -> PathBuf {
    let file = dir.join(format!("channels-{version}.yaml"));
    std::fs::write(&file, format!("{REVISION}: {version}\n")).unwrap();
    file
}

/// The rapid DataPlaneControl's `spec.proxyVersion`, once it is `version`.
async fn control_at(controls: &Api<DataPlaneControl>, version: &str) {
    wait_for(
        &format!("the DataPlaneControl at {version}"),
        Duration::from_secs(30),
        async || {
            let control = controls.get(REVISION).await.ok()?;
            (control.spec.proxy_version.as_deref() == Some(version)).then_some(())
        },
    )
    .await
    .unwrap();
}

/// Waits until the pods `selector` picks in `pods` are `want`.
async fn settled(pods: &Api<Pod>, selector: &str, want: &[&str]) {
    wait_for(
        &format!("{selector} on {want:?}"),
        Duration::from_secs(120),
        async || (proxy_versions(pods, selector).await == want).then_some(()),
    )
    .await
    .unwrap();
}

/// Who holds the data plane Lease now.
async fn lease_holder(client: &kube::Client) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "istio-system");
    let lease = leases.get("fleetmesh-data-plane").await.ok()?;
    lease.spec?.holder_identity
}

/// The uid of the one pod `selector` picks.
async fn uid(pods: &Api<Pod>, selector: &str) -> Option<String> {
    let list = pods.list(&ListParams::default().labels(selector)).await;
    list.ok()?.items.first()?.metadata.uid.clone()
}

/// `fleetmesh install` of the rapid channel (no registration) against `meshd`.
async fn install_rapid(cluster: &TestCluster, meshd: &Meshd, dir: &Path) {
    let plan = Plan {
        project: "versions".into(),
        location: "local".into(),
        cluster: "versions".into(),
        channel: Channel::Rapid,
        cni_managed: true,
        hub: fleetmesh_inject::DEFAULT_HUB.into(),
    };
    install::run(&install_options(plan, cluster, meshd, &dir.join("install")))
        .await
        .expect("install succeeds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgraded_meshd_moves_its_revisions_forward_never_back() {
    let cluster = TestCluster::start("fleetmesh-versions").expect("the local cluster starts");
    let client = cluster.client().await.unwrap();
    let controls: Api<DataPlaneControl> = Api::all(client.clone());
    // A cluster reused from an earlier run: its DataPlaneControls start over.
    let _ = controls
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await;
    let dir = tempfile::tempdir().unwrap();
    let meshd = start_meshd(dir.path(), &cluster, Some(channels(dir.path(), A)), None).await;
    let addresses = Addresses::of(&meshd);
    install_rapid(&cluster, &meshd, dir.path()).await;
    control_at(&controls, A).await;

    // Managed pods (2 behind a PDB of minAvailable 1) and a pod that is not managed.
    let managed = TestNamespace::create(&client, "upgrade-managed")
        .await
        .unwrap();
    let unmanaged = TestNamespace::create(&client, "upgrade-unmanaged")
        .await
        .unwrap();
    for namespace in [&managed, &unmanaged] {
        let label = format!("istio.io/rev={REVISION}");
        cluster
            .run_kubectl(&["label", "namespace", &namespace.name, &label], None)
            .unwrap();
    }
    let opt_in = r#"mesh.cloud.google.com/proxy={"managed":"true"}"#;
    let annotate = ["annotate", "namespace", &managed.name, opt_in];
    cluster.run_kubectl(&annotate, None).unwrap();
    managed
        .apply(&format!(
            "{}---\n{}",
            deployment("web", 2, ""),
            budget("minAvailable: 1")
        ))
        .await
        .unwrap();
    unmanaged.apply(&deployment("plain", 1, "")).await.unwrap();
    let managed_pods: Api<Pod> = Api::namespaced(client.clone(), &managed.name);
    let unmanaged_pods: Api<Pod> = Api::namespaced(client.clone(), &unmanaged.name);
    settled(&managed_pods, "app=web", &[A, A]).await;
    settled(&unmanaged_pods, "app=plain", &[A]).await;
    let plain = uid(&unmanaged_pods, "app=plain").await;

    // Release B: the revision moves to B; managed pods roll, the other keeps A.
    meshd.shutdown().await;
    let channels_b = channels(dir.path(), B);
    let meshd = start_meshd(dir.path(), &cluster, Some(channels_b), Some(&addresses)).await;
    control_at(&controls, B).await;
    settled(&managed_pods, "app=web", &[B, B]).await;
    assert_eq!(proxy_versions(&unmanaged_pods, "app=plain").await, [A]);
    assert_eq!(
        uid(&unmanaged_pods, "app=plain").await,
        plain,
        "never evicted"
    );
    let restart = [
        "rollout",
        "restart",
        "deployment",
        "plain",
        "-n",
        &unmanaged.name,
    ];
    cluster.run_kubectl(&restart, None).unwrap();
    settled(&unmanaged_pods, "app=plain", &[B]).await;

    // Release A again: B stays, and is what new pods get. (Once A holds the Lease it
    // would move the version in its next passes, if it moved versions back.)
    let holder_b = lease_holder(&client).await;
    meshd.shutdown().await;
    let channels_a = channels(dir.path(), A);
    let meshd = start_meshd(dir.path(), &cluster, Some(channels_a), Some(&addresses)).await;
    wait_for(
        "release A to hold the Lease",
        Duration::from_secs(30),
        async || {
            let holder = lease_holder(&client).await;
            (holder.is_some() && holder != holder_b).then_some(())
        },
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let scale = [
        "scale",
        "deployment",
        "plain",
        "--replicas=2",
        "-n",
        &unmanaged.name,
    ];
    cluster.run_kubectl(&scale, None).unwrap();
    settled(&unmanaged_pods, "app=plain", &[B, B]).await;
    settled(&managed_pods, "app=web", &[B, B]).await;
    let control = controls.get(REVISION).await.unwrap();
    assert_eq!(control.spec.proxy_version.as_deref(), Some(B));
    meshd.shutdown().await;
}
