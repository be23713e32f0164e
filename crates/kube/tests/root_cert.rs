//! The mesh roots in every namespace, beside another control plane, against a real API
//! server: a namespace gets meshd's roots; a map another control plane wrote with the
//! same root (a shared CA) is kept current; one holding another CA's root (an in-cluster
//! istiod's own) stays as it is, since its proxies verify istiod with it.

use fleetmesh_ca::CertificateAuthority;
use fleetmesh_kube::root_cert::{CONFIG_MAP, KEY, publish};
use fleetmesh_kube::testing::{TestCluster, TestNamespace, wait_for};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use std::sync::Arc;
use std::time::Duration;

fn authority(dir: &std::path::Path) -> CertificateAuthority {
    CertificateAuthority::load_or_create(dir, "cluster.local", Duration::from_secs(3600)).unwrap()
}

/// Writes the root ConfigMap as another control plane does (a create, not meshd's apply).
async fn written_by_istiod(client: &kube::Client, namespace: &str, roots: &str) {
    let map: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": CONFIG_MAP, "labels": {"istio.io/config": "true"}},
        "data": {KEY: roots},
    }))
    .unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let params = PostParams {
        field_manager: Some("pilot-discovery".into()),
        ..PostParams::default()
    };
    api.create(&params, &map).await.unwrap();
}

async fn managers(client: &kube::Client, namespace: &str) -> Vec<String> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let map = api.get(CONFIG_MAP).await.unwrap();
    map.metadata
        .managed_fields
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.manager)
        .collect()
}

async fn held(client: &kube::Client, namespace: &str) -> Option<String> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    api.get_opt(CONFIG_MAP)
        .await
        .ok()
        .flatten()
        .and_then(|m| m.data)
        .and_then(|mut d| d.remove(KEY))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_cas_roots_stay_and_a_shared_cas_follow_meshd() {
    let cluster = TestCluster::start("fleetmesh-kube-local").expect("the local cluster starts");
    let client = cluster.client().await.unwrap();
    let dirs = tempfile::tempdir().unwrap();
    let mesh = authority(&dirs.path().join("mesh"));
    let other = authority(&dirs.path().join("other"));
    let mesh_roots = mesh.roots().to_string();

    let fresh = TestNamespace::create(&client, "roots-fresh").await.unwrap();
    let shared = TestNamespace::create(&client, "roots-shared")
        .await
        .unwrap();
    let istiods = TestNamespace::create(&client, "roots-istiod")
        .await
        .unwrap();
    written_by_istiod(&client, &shared.name, &mesh_roots).await;
    written_by_istiod(&client, &istiods.name, other.roots()).await;

    let (authority_tx, authority_rx) = tokio::sync::watch::channel(Arc::new(mesh));
    let publisher = tokio::spawn(publish(client.clone(), vec![authority_rx]));
    let fresh_roots = wait_for(
        "the fresh namespace's roots",
        Duration::from_secs(30),
        async || held(&client, &fresh.name).await,
    )
    .await
    .unwrap();
    assert_eq!(fresh_roots.trim(), mesh_roots.trim());
    wait_for(
        "meshd to take the shared CA's map",
        Duration::from_secs(30),
        async || {
            managers(&client, &shared.name)
                .await
                .contains(&"meshd".to_string())
                .then_some(())
        },
    )
    .await
    .unwrap();

    // meshd's roots change (a new CA): the maps it holds follow, the other CA's does not.
    let next = authority(&dirs.path().join("next"));
    let next_roots = next.roots().to_string();
    authority_tx.send_replace(Arc::new(next));
    for namespace in [&fresh.name, &shared.name] {
        wait_for(
            "the map to follow meshd",
            Duration::from_secs(30),
            async || (held(&client, namespace).await?.trim() == next_roots.trim()).then_some(()),
        )
        .await
        .unwrap();
    }
    assert_eq!(
        held(&client, &istiods.name).await.as_deref(),
        Some(other.roots()),
        "another CA's map is left as it is"
    );
    assert_eq!(managers(&client, &istiods.name).await, ["pilot-discovery"]);
    publisher.abort();
}
