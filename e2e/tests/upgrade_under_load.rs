//! A control-plane upgrade reaches the proxies without a failed request (SPEC S9, S12),
//! on the local cluster's real node. meshd release A (its channel table pins the regular
//! revision's proxy to this build's version) serves a managed namespace (two `reviews`
//! replicas under a PodDisruptionBudget) and a client namespace that is not managed and
//! calls `reviews` without pause. Release B (whose table names a newer version: the same
//! proxy build under a second image tag) replaces A on the same ports: the managed pods
//! are evicted one at a time within their budget and come back with B's proxy, while the
//! client keeps A's until `kubectl rollout restart` gives it B. The test's client counts
//! every answer: none fails, and the budget never has fewer healthy pods than it demands.
//!
//! Needs the images: `scripts/build-images --profile debug` (scripts/test builds them).

use fleetmesh_dataplane::DataPlaneControl;
use fleetmesh_e2e::data_plane::{Addresses, proxy_versions};
use fleetmesh_e2e::load::{
    BudgetWatch, RequestLog, ServiceAddress, load_deployment, reviews_with_budget,
};
use fleetmesh_e2e::real_node::{
    InNamespace, install, pods, restarted, start_cluster, start_meshd_with,
};
use fleetmesh_inject::channel::{DEFAULT_HUB, proxy_image};
use fleetmesh_meshd::Meshd;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use std::path::Path;
use std::time::Duration;

/// The revision `install` (channel regular) injects.
const REVISION: &str = "asm-managed";
/// Release A's proxy: this build.
const A: &str = env!("CARGO_PKG_VERSION");

/// Release B's proxy: a newer version (the next major) of the same build.
fn version_b() -> String {
    let major: u32 = A.split('.').next().unwrap().parse().unwrap();
    format!("{}.0.0", major + 1)
}

/// meshd with a channel table pinning the revision to `version`, evicting a pod a second;
/// on `earlier`'s ports if given (the cluster's webhooks call them).
async fn meshd_release(
    cluster: &fleetmesh_kube::testing::TestCluster,
    dir: &Path,
    version: &str,
    earlier: Option<&Addresses>,
) -> Meshd {
    let channels = dir.join(format!("channels-{version}.yaml"));
    std::fs::write(&channels, format!("{REVISION}: {version}\n")).unwrap();
    start_meshd_with(cluster, &dir.join("mesh"), |config| {
        config.channels = Some(channels);
        config.data_plane_eviction_pace = Duration::from_secs(1);
        if let Some(earlier) = earlier {
            earlier.apply_to(config);
        }
    })
    .await
}

/// Waits until the pods `selector` picks in `namespace` all run `want` (and are ready).
async fn settled(client: &kube::Client, namespace: &str, selector: &str, want: &[&str]) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    fleetmesh_e2e::eventually(
        &format!("{selector} on {want:?}"),
        Duration::from_secs(180),
        async || (proxy_versions(&pods, selector).await == want).then_some(()),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_reaches_the_proxies_without_a_failed_request() {
    let cluster = start_cluster();
    let b = version_b();
    cluster
        .tag_image(&proxy_image(DEFAULT_HUB, A), &proxy_image(DEFAULT_HUB, &b))
        .expect("the proxy image gets release B's tag");
    let client = cluster.client().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let release_a = meshd_release(&cluster, dir.path(), A, None).await;
    let addresses = Addresses::of(&release_a);
    install(&cluster, &release_a, false).await;
    let controls: Api<DataPlaneControl> = Api::all(client.clone());
    fleetmesh_e2e::eventually(
        "the DataPlaneControl at A",
        Duration::from_secs(30),
        async || {
            let control = controls.get(REVISION).await.ok()?;
            (control.spec.proxy_version.as_deref() == Some(A)).then_some(())
        },
    )
    .await;

    let (_managed_ns, managed) = InNamespace::create(&cluster, "upgrade-managed").await;
    let (_caller_ns, caller) = InNamespace::create(&cluster, "upgrade-caller").await;
    managed.inject();
    caller.inject();
    let opt_in = r#"mesh.cloud.google.com/proxy={"managed":"true"}"#;
    cluster
        .run_kubectl(&["annotate", "namespace", &managed.namespace, opt_in], None)
        .unwrap();
    managed.apply(&reviews_with_budget());
    managed.rolled_out("reviews");
    let reviews = ServiceAddress::of(&cluster, &managed.namespace, "reviews", 9080);
    caller.apply(&load_deployment("load", &reviews, "", true));
    caller.rolled_out("load");
    settled(&client, &managed.namespace, "app=reviews", &[A, A]).await;
    let requests = RequestLog::follow(&client, &caller.namespace, "app=load", "load");
    let budget = BudgetWatch::start(&client, &managed.namespace, "reviews");
    requests.flows(20, "on release A").await;

    // Release B replaces A: the managed pods move to B by evictions, within the budget.
    release_a.shutdown().await;
    let release_b = meshd_release(&cluster, dir.path(), &b, Some(&addresses)).await;
    settled(&client, &managed.namespace, "app=reviews", &[&b, &b]).await;
    requests
        .flows(20, "after the managed pods moved to B")
        .await;
    // Not managed: A until its next restart, which gives it B.
    settled(&client, &caller.namespace, "app=load", &[A]).await;
    caller
        .kubectl(&["rollout", "restart", "deployment", "load"], None)
        .unwrap();
    caller.rolled_out("load");
    settled(&client, &caller.namespace, "app=load", &[&b]).await;
    requests.flows(20, "after the client's restart").await;

    requests.assert_none_failed();
    budget.assert_held();
    let restarts = restarted(&pods(&client, &managed.namespace, "").await);
    assert!(restarts.is_empty(), "{restarts:?}");
    eprintln!(
        "upgraded from {A} to {b}: {} requests, none failed; fewest healthy pods {:?}",
        requests.succeeded(),
        budget.lowest()
    );
    release_b.shutdown().await;
    cluster.stop().expect("the node stops");
}
