//! Moving workloads between revisions without a failed request (SPEC S18, S20, S21), on
//! the local cluster's real node, with traffic flowing for the whole test:
//!
//! - a client namespace calls a server namespace (two replicas under a
//!   PodDisruptionBudget) while both move to `asm-managed-rapid` the guide's way
//!   (`kubectl label namespace ... istio.io/rev=... --overwrite`, `kubectl rollout
//!   restart deployment -n ...`), then back to `asm-managed` (the rollback);
//! - an ingress gateway is migrated the guide's way: a new gateway Deployment beside the
//!   old, one Service selecting both, the new one scaled up and the old one down, while a
//!   client outside the mesh calls through the Service; then a change to the new gateway
//!   is rolled out and taken back with `kubectl rollout undo` (S20).
//!
//! The test's own clients count every answer (`fleetmesh_e2e::load`): none may fail,
//! and the server's budget is never short of healthy pods.
//!
//! Needs the images: `scripts/build-images --profile debug` (scripts/test builds them).

use fleetmesh_e2e::load::{
    BudgetWatch, RequestLog, ServiceAddress, load_deployment, reviews_with_budget,
};
use fleetmesh_e2e::real_node::{
    InNamespace, install, pods, shop_through_gateway, start_cluster, start_meshd,
};
use fleetmesh_inject::annotations;
use fleetmesh_kube::testing::TestCluster;

const REGULAR: &str = "asm-managed";
const RAPID: &str = "asm-managed-rapid";

/// The revision each pod of `namespace` was injected by.
async fn revisions(client: &kube::Client, namespace: &str) -> Vec<String> {
    pods(client, namespace, "")
        .await
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| {
            let status = p
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(annotations::STATUS).cloned())
                .unwrap_or_default();
            let status: serde_json::Value = serde_json::from_str(&status).unwrap_or_default();
            status["revision"].as_str().unwrap_or("none").to_string()
        })
        .collect()
}

/// Now, in seconds since the epoch (what the load pods print), for the failure report.
fn mark(what: &str) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    eprintln!("{:.3} {what}", now.as_secs_f64());
}

/// Moves the namespaces to `revision` as the guide says: the label, then a rollout
/// restart of every Deployment; each namespace's pods all run `revision`'s proxy after.
async fn move_to(client: &kube::Client, namespaces: &[&InNamespace<'_>], revision: &str) {
    mark(&format!("moving to {revision}"));
    for ns in namespaces {
        ns.label_revision(revision);
        ns.kubectl(&["rollout", "restart", "deployment"], None)
            .unwrap_or_else(|e| panic!("rollout restart in {}: {e}", ns.namespace));
    }
    for ns in namespaces {
        let deployments = ns
            .kubectl(&["get", "deployments", "-o", "name"], None)
            .unwrap();
        for deployment in deployments.lines() {
            ns.rolled_out(deployment.trim_start_matches("deployment.apps/"));
        }
        fleetmesh_e2e::eventually(
            "the old pods to go",
            std::time::Duration::from_secs(60),
            async || {
                let now = revisions(client, &ns.namespace).await;
                now.iter().all(|r| r == revision).then_some(())
            },
        )
        .await;
        mark(&format!("{} moved", ns.namespace));
    }
}

/// S18 and S20: a client and a server namespace move to rapid and back under load.
async fn namespaces_move_and_roll_back(cluster: &TestCluster, client: &kube::Client) {
    let (server_ns, server_side) = InNamespace::create(cluster, "migrate-server").await;
    let (client_ns, client_side) = InNamespace::create(cluster, "migrate-client").await;
    server_side.label_revision(REGULAR);
    client_side.label_revision(REGULAR);
    server_side.apply(&reviews_with_budget());
    server_side.rolled_out("reviews");
    let reviews = ServiceAddress::of(cluster, &server_side.namespace, "reviews", 9080);
    client_side.apply(&load_deployment("load", &reviews, "", true));
    client_side.rolled_out("load");

    let requests = RequestLog::follow(client, &client_side.namespace, "app=load", "load");
    let budget = BudgetWatch::start(client, &server_side.namespace, "reviews");
    requests.flows(20, "before the migration").await;

    move_to(client, &[&server_side, &client_side], RAPID).await;
    requests.flows(20, "after the migration to rapid").await;
    move_to(client, &[&server_side, &client_side], REGULAR).await;
    requests.flows(20, "after the rollback").await;

    requests.assert_none_failed();
    let pods_seen: std::collections::BTreeSet<_> =
        requests.answers().into_iter().map(|a| a.pod).collect();
    assert!(
        pods_seen.len() >= 3,
        "the client itself moved twice: {pods_seen:?}"
    );
    eprintln!(
        "namespaces moved and back: {} requests from {} client pods, none failed",
        requests.succeeded(),
        pods_seen.len()
    );
    budget.assert_held();
    server_ns.delete().await.ok();
    client_ns.delete().await.ok();
}

/// The guide's gateway Deployment in `old`, as a second Deployment beside it: the pods'
/// labels the Service selects, the rapid revision, a label of its own so the two
/// Deployments' selectors differ, and no replica yet.
fn rapid_gateway(old: &str) -> String {
    let new = old
        .split("---")
        .find(|doc| doc.contains("kind: Deployment"))
        .unwrap()
        .replace(
            "name: istio-ingressgateway\n",
            "name: istio-ingressgateway-rapid\n",
        )
        .replace(
            "      istio: ingressgateway\n  template:",
            "      istio: ingressgateway\n      gateway: rapid\n  template:",
        )
        .replace(
            &format!("istio.io/rev: {REGULAR}"),
            &format!("istio.io/rev: {RAPID}\n        gateway: rapid"),
        )
        .replace("spec:\n  selector:", "spec:\n  replicas: 0\n  selector:");
    assert!(
        new.contains("gateway: rapid") && new.contains("replicas: 0"),
        "{new}"
    );
    new
}

/// S21: a new gateway Deployment beside the old under one Service, scaled up while the
/// old one is scaled down, for a caller outside the mesh.
async fn gateway_migrates(cluster: &TestCluster, client: &kube::Client) {
    let (apps_ns, apps) = InNamespace::create(cluster, "gateway-apps").await;
    let (gateway_ns, g) = InNamespace::create(cluster, "gateway").await;
    apps.label_revision(REGULAR);
    apps.apply(&reviews_with_budget());
    apps.rolled_out("reviews");
    let old = fleetmesh_cli::install::samples::gateway(REGULAR)
        .replace("GATEWAY_NAMESPACE", &g.namespace);
    g.apply(&old);
    g.apply(&shop_through_gateway(&format!(
        "host: reviews.{}.svc.cluster.local",
        apps.namespace
    )));
    g.rolled_out("istio-ingressgateway");
    let gateway = ServiceAddress::of(cluster, &g.namespace, "istio-ingressgateway", 80);
    g.apply(&load_deployment(
        "outside",
        &gateway,
        "-H 'Host: shop.example.com'",
        false,
    ));
    g.rolled_out("outside");

    let requests = RequestLog::follow(client, &g.namespace, "app=outside", "load");
    requests.flows(20, "through the old gateway").await;

    let new = rapid_gateway(&old);
    g.apply(&new);
    for (deployment, replicas) in [
        ("istio-ingressgateway-rapid", 1),
        ("istio-ingressgateway", 0),
        ("istio-ingressgateway-rapid", 2),
    ] {
        g.kubectl(
            &[
                "scale",
                &format!("deployment/{deployment}"),
                &format!("--replicas={replicas}"),
            ],
            None,
        )
        .unwrap();
        g.rolled_out(deployment);
        requests
            .flows(20, &format!("with {deployment} at {replicas}"))
            .await;
    }
    fleetmesh_e2e::eventually(
        "the old gateway's pods to go",
        std::time::Duration::from_secs(60),
        async || {
            let now = revisions(client, &g.namespace).await;
            (!now.iter().any(|r| r == REGULAR)).then_some(())
        },
    )
    .await;
    requests.flows(20, "through the new gateway only").await;
    gateway_change_undone(&g, &requests).await;

    requests.assert_none_failed();
    eprintln!(
        "gateway migrated: {} requests, none failed",
        requests.succeeded()
    );
    apps_ns.delete().await.ok();
    gateway_ns.delete().await.ok();
}

/// S20's way back for a gateway: a change to the new gateway's Deployment (its pods to
/// the regular revision) rolled out, then `kubectl rollout undo`, under the same traffic.
async fn gateway_change_undone(g: &InNamespace<'_>, requests: &RequestLog) {
    let deployment = "deployment/istio-ingressgateway-rapid";
    let to_regular = format!(
        r#"{{"spec":{{"template":{{"metadata":{{"labels":{{"istio.io/rev":"{REGULAR}"}}}}}}}}}}"#
    );
    g.kubectl(
        &["patch", deployment, "--type=merge", "-p", &to_regular],
        None,
    )
    .unwrap();
    g.rolled_out("istio-ingressgateway-rapid");
    requests.flows(20, "after the gateway's change").await;
    let undone = g.kubectl(&["rollout", "undo", deployment], None).unwrap();
    assert!(undone.contains("rolled back"), "{undone}");
    g.rolled_out("istio-ingressgateway-rapid");
    requests
        .flows(20, "after the gateway's change was undone")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloads_and_gateways_change_revision_without_a_failed_request() {
    let cluster = start_cluster();
    let client = cluster.client().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let meshd = start_meshd(&cluster, dir.path()).await;
    install(&cluster, &meshd, false).await;

    namespaces_move_and_roll_back(&cluster, &client).await;
    gateway_migrates(&cluster, &client).await;

    meshd.shutdown().await;
    cluster.stop().expect("the node stops");
}
