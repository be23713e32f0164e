//! meshd's HTTP side as istioctl and dashboards use it: Prometheus metrics under istiod's
//! names, /debug/syncz and /debug/config_dump.

use fleetmesh_e2e::*;

async fn http_get(mesh: &LocalMesh, path: &str) -> (u16, String) {
    let response = reqwest::get(format!("http://{}{path}", mesh.meshd().http_address()))
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_syncz_and_config_dump() {
    let store = Bookstore::start(XdsMode::Delta).await;

    let (status, metrics) = http_get(&store.mesh, "/metrics").await;
    assert_eq!(status, 200);
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        metrics.contains(&format!("pilot_xds{{version=\"{version}\"}} 4")),
        "four proxies connected:\n{metrics}"
    );
    for name in [
        // istiod's names: no `_total`, as Istio's dashboards query them.
        "pilot_xds_pushes{type=\"cds\"}",
        "pilot_proxy_convergence_time_count",
        "pilot_total_xds_rejects",
        &format!("istio_build{{component=\"pilot\",tag=\"{version}\"}} 1"),
        &format!(
            "fleetmesh_proxy_clients{{project=\"\",cluster=\"local\",revision=\"\",proxy_version=\"{version}\"}} 4"
        ),
    ] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }

    let (status, syncz) = http_get(&store.mesh, "/debug/syncz").await;
    assert_eq!(status, 200);
    let syncz: serde_json::Value = serde_json::from_str(&syncz).unwrap();
    assert_eq!(syncz.as_array().map(Vec::len), Some(4), "{syncz}");
    // istiod's fields, as `istioctl proxy-status` reads them.
    let frontend = syncz
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["proxy"] == store.frontend.node_id)
        .expect("the frontend's entry");
    assert_eq!(frontend["proxy_type"], "sidecar", "{frontend}");
    assert_eq!(frontend["cluster_id"], "local", "{frontend}");
    assert_eq!(
        frontend["istio_version"], frontend["proxy_version"],
        "{frontend}"
    );

    let (status, dump) = http_get(
        &store.mesh,
        &format!("/debug/config_dump?proxyID={}", store.frontend.node_id),
    )
    .await;
    assert_eq!(status, 200, "{dump}");
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    let clusters: Vec<&str> = dump["configs"][0]["dynamic_active_clusters"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["cluster"]["name"].as_str())
        .collect();
    assert!(
        clusters.contains(&"outbound|9080|v1|reviews.default.svc.cluster.local"),
        "{clusters:?}"
    );
    let listeners: Vec<&str> = dump["configs"][1]["dynamic_listeners"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["name"].as_str())
        .collect();
    assert!(listeners.contains(&"virtualOutbound"), "{listeners:?}");
    // istioctl's name for the same proxy: POD.NAMESPACE, the node id's third part.
    let short = store
        .frontend
        .node_id
        .split('~')
        .nth(2)
        .unwrap()
        .to_string();
    let (status, by_pod) =
        http_get(&store.mesh, &format!("/debug/config_dump?proxyID={short}")).await;
    assert_eq!(status, 200, "{by_pod}");
    let by_pod: serde_json::Value = serde_json::from_str(&by_pod).unwrap();
    assert_eq!(
        by_pod["configs"][0], dump["configs"][0],
        "the same proxy's clusters"
    );

    let (status, _) = http_get(
        &store.mesh,
        "/debug/config_dump?proxyID=sidecar~1.2.3.4~nobody.default~default.svc.cluster.local",
    )
    .await;
    assert_eq!(status, 404);
    let (status, hint) = http_get(&store.mesh, "/debug/config_dump").await;
    assert_eq!(status, 400);
    assert!(hint.contains("proxyID"), "{hint}");
    proxy_config_shows_what_the_proxy_gets(&store.mesh).await;
}

/// `fleetmesh proxy-config` of the frontend's proxy: its clusters, endpoints and secrets
/// as istioctl tabulates them, the resources with `-o json`, and a clear error for a pod
/// with no proxy.
async fn proxy_config_shows_what_the_proxy_gets(mesh: &LocalMesh) {
    use fleetmesh_cli::install::meshd_api::MeshdApi;
    use fleetmesh_cli::proxy_config::{Section, show};
    let url = format!("http://{}", mesh.meshd().http_address());
    let api = MeshdApi::new(&url, mesh.meshd().admin_token_file());
    let clusters = show(&api, Section::Cluster, "frontend.default", false)
        .await
        .unwrap();
    let row = clusters
        .lines()
        .find(|l| l.starts_with("reviews.default.svc.cluster.local") && l.contains(" v1 "))
        .unwrap_or_else(|| panic!("{clusters}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[1..], ["9080", "v1", "outbound", "EDS"], "{clusters}");
    let endpoints = show(&api, Section::Endpoint, "frontend", false)
        .await
        .unwrap();
    let reviews_v1 = "outbound|9080|v1|reviews.default.svc.cluster.local";
    assert!(
        endpoints.lines().any(|l| l.ends_with(reviews_v1)),
        "{endpoints}"
    );
    let json = show(&api, Section::Listener, "frontend", true)
        .await
        .unwrap();
    let listeners: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(
        listeners
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["name"] == "virtualOutbound"),
        "{json}"
    );
    // A sidecar's certificates all come from its agent: meshd names them, never holds them.
    let secrets = show(&api, Section::Secret, "frontend", false)
        .await
        .unwrap();
    let served: Vec<Vec<&str>> = secrets
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().take(2).collect())
        .collect();
    assert_eq!(
        served,
        [vec!["ROOTCA", "agent"], vec!["default", "agent"]],
        "{secrets}"
    );
    let missing = show(&api, Section::Route, "nobody.shop", false)
        .await
        .unwrap_err();
    assert!(missing.to_string().contains("nobody.shop"), "{missing}");
}

/// The fleet API over meshd's real port: without the admin token (or with another) a
/// registration is refused with 401 and nothing is recorded; with it, it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_management_api_needs_the_admin_token() {
    use fleetmesh_cli::install::meshd_api::MeshdApi;
    let mesh = LocalMesh::start(None, XdsMode::Delta).await.unwrap();
    let url = format!("http://{}", mesh.meshd().http_address());
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong-token");
    std::fs::write(&wrong, "f".repeat(64)).unwrap();
    let register = |token_file: &std::path::Path| {
        let client = reqwest::Client::new();
        let token = std::fs::read_to_string(token_file).unwrap_or_default();
        let request = client
            .put(format!("{url}/v1/projects/p/memberships/c1"))
            .json(&serde_json::json!({"location": "us-central1", "channel": "regular"}));
        let request = if token.is_empty() {
            request
        } else {
            request.bearer_auth(token)
        };
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(register(&dir.path().join("missing")).await, 401);
    assert_eq!(register(&wrong).await, 401);
    let admin = MeshdApi::new(&url, mesh.meshd().admin_token_file());
    assert_eq!(admin.projects().await.unwrap(), serde_json::json!({}));
    let refused = MeshdApi::new(&url, &wrong).projects().await.unwrap_err();
    assert!(refused.to_string().contains("401"), "{refused}");
    assert_eq!(register(mesh.meshd().admin_token_file()).await, 200);
    let projects = admin.projects().await.unwrap();
    assert_eq!(
        projects["p"]["memberships"]["c1"]["location"],
        "us-central1"
    );
    // Metrics stay open to scrapers.
    let (status, _) = http_get(&mesh, "/metrics").await;
    assert_eq!(status, 200);
}
