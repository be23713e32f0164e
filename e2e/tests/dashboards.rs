//! Istio's control-plane dashboard on meshd: every series its queries select that has a
//! meaning for meshd comes from a running meshd, under istiod's names and labels, and
//! counts what happened (watch events, pushes and their causes, webhook answers).
//! The dashboard is read from the pinned `istio.io/istio` module
//! (`manifests/addons/dashboards/pilot-dashboard.gen.json`, generated there from
//! `pilot.libsonnet` and `lib/queries.libsonnet`).

use fleetmesh_cli::install::meshd_api::MeshdApi;
use fleetmesh_e2e::dashboards::{Selector, queries, selectors, selects};
use fleetmesh_e2e::istio_source;
use fleetmesh_e2e::*;
use fleetmesh_kube::testing::{TestCluster, TestNamespace};
use std::collections::BTreeSet;
use std::time::Duration;

/// What the dashboard selects that is not meshd's to serve, by name prefix, and why.
const NOT_MESHD: [(&str, &str); 3] = [
    (
        "container_",
        "the kubelet's cAdvisor measures the container, scraped from the node (meshd's own figures are process_*)",
    ),
    (
        "go_",
        "Go runtime statistics: meshd is no Go program (process_* gives its memory and CPU)",
    ),
    ("envoy_", "scraped from each proxy's Envoy, not from meshd"),
];

const RESOURCES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews}}]}]
"#;

const POD_REVIEW: &str = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{
 "uid":"u1","kind":{"group":"","version":"v1","kind":"Pod"},"operation":"CREATE","namespace":"shop",
 "object":{"metadata":{"name":"reviews-0","labels":{"app":"reviews"}},
  "spec":{"containers":[{"name":"reviews","image":"reviews:v1"}]}}}}"#;

fn config_review(weight: i64) -> String {
    format!(
        r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{
 "uid":"u2","kind":{{"group":"networking.istio.io","version":"v1","kind":"VirtualService"}},"operation":"CREATE","namespace":"shop",
 "object":{{"apiVersion":"networking.istio.io/v1","kind":"VirtualService","metadata":{{"name":"r","namespace":"shop"}},
  "spec":{{"hosts":["reviews"],"http":[{{"route":[{{"destination":{{"host":"reviews"}},"weight":{weight}}}]}}]}}}}}}}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_plane_dashboard_finds_every_series() {
    let selected = dashboard_selectors();

    let (cluster, client) = TestCluster::start_with_istio("fleetmesh-kube-tests")
        .await
        .expect("the local cluster starts and serves Istio's CRDs");
    let namespace = TestNamespace::create(&client, "dashboards").await.unwrap();
    let mesh = LocalMesh::start_with(None, XdsMode::Delta, Some(cluster.kubeconfig.clone()))
        .await
        .expect("meshd watches the cluster");
    let _proxy = mesh
        .add_proxy("sidecar", "client-0", &namespace.name, "client", &[])
        .await
        .expect("Envoy starts");
    namespace.apply(RESOURCES).await.unwrap();

    let meshd = mesh.meshd();
    let meshd_url = format!("http://{}", meshd.http_address());
    call_webhooks(meshd, &meshd_url).await;

    let scrape = async || {
        reqwest::get(format!("{meshd_url}/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()
    };
    // Watch events and the pushes they cause arrive on their own time.
    let exposition = eventually(
        "the VirtualService and Service events counted",
        Duration::from_secs(30),
        async || {
            let text = scrape().await?;
            let seen = |line: &str| text.lines().any(|l| l.starts_with(line));
            (seen("pilot_k8s_cfg_events{type=\"VirtualService\",event=\"add\"}")
                && seen("pilot_k8s_reg_events{type=\"Services\",event=\"add\"}"))
            .then_some(text)
        },
    )
    .await;

    let mut missing = Vec::new();
    for selector in &selected {
        if NOT_MESHD
            .iter()
            .any(|(prefix, _)| selector.name.starts_with(prefix))
        {
            continue;
        }
        if !selects(&exposition, selector) {
            missing.push(selector.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "series the dashboard selects and meshd lacks: {missing:?}\n{exposition}"
    );

    // What the series count is what happened.
    let value = |series: &str| -> f64 {
        exposition
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{series} in:\n{exposition}"))
    };
    assert_eq!(value("sidecar_injection_success_total"), 1.0);
    assert_eq!(value("sidecar_injection_failure_total"), 1.0);
    assert_eq!(value("galley_validation_passed"), 1.0);
    assert_eq!(value("galley_validation_failed"), 1.0);
    assert!(value("pilot_push_triggers{type=\"config\"}") >= 1.0);
    assert!(value("pilot_push_triggers{type=\"service\"}") >= 1.0);
    assert!(value("pilot_xds_pushes{type=\"lds\"}") >= 1.0);
    assert!(value("pilot_xds_push_time_count{type=\"lds\"}") >= 1.0);
    assert!(value("pilot_xds_config_size_bytes_count{type=\"lds\"}") >= 1.0);
    assert_eq!(value("pilot_total_xds_internal_errors"), 0.0);
    assert!(value("process_resident_memory_bytes") > 1e6);
    assert!(value("process_cpu_seconds_total") > 0.0);

    namespace.delete().await.unwrap();
}

/// Calls the webhooks as the API server does: an injection, one for no revision, a
/// valid and an invalid VirtualService.
async fn call_webhooks(meshd: &fleetmesh_meshd::Meshd, meshd_url: &str) {
    let roots = MeshdApi::new(meshd_url, meshd.admin_token_file())
        .install_info(None)
        .await
        .unwrap()
        .ca_bundle;
    let webhook = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(roots.as_bytes()).unwrap())
        .build()
        .unwrap();
    let address = meshd.webhook_address();
    for (path, body) in [
        (
            "/inject/asm-managed/cluster/local/redirect/init",
            POD_REVIEW.to_string(),
        ),
        (
            "/inject/no-such-revision/cluster/local/redirect/init",
            POD_REVIEW.to_string(),
        ),
        ("/validate", config_review(100)),
        ("/validate", config_review(-1)),
    ] {
        webhook
            .post(format!("https://{address}{path}"))
            .body(body)
            .send()
            .await
            .unwrap();
    }
}

/// The series Istio's control-plane dashboard selects.
fn dashboard_selectors() -> BTreeSet<Selector> {
    let dashboard = istio_source().join("manifests/addons/dashboards/pilot-dashboard.gen.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&dashboard).unwrap()).unwrap();
    let selected: BTreeSet<Selector> = queries(&dashboard)
        .iter()
        .flat_map(|q| selectors(q))
        .collect();
    assert!(
        selected.len() >= 20,
        "the dashboard's queries were read: {selected:?}"
    );
    selected
}
