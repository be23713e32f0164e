//! Several meshd replicas share one fleet registry in a host cluster (a real
//! kube-apiserver): a member registered through one replica is served by another, with
//! the same project root (the replicas share `--ca-dir`); a change made through either
//! is seen by the other at once; the member's managed data plane is driven by exactly
//! one replica at a time (its Lease), and handed over when that replica stops. (Pod IPs
//! are fake and receive no packet: the proxies run on loopback with the pods' tokens.)

use fleetmesh_e2e::fleet::{Member, api, certificate, served};
use fleetmesh_e2e::*;
use fleetmesh_kube::testing::{TestCluster, wait_for};
use std::path::Path;
use std::time::Duration;

const NAMESPACE: &str = "shop";
const REGISTRY_NAMESPACE: &str = "fleetmesh-registry-test";
const WEB: &str = "outbound|80||web.shop.svc.cluster.local";

const WORKLOADS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {selector: {app: web}, ports: [{name: http, port: 80}]}
"#;

/// A hosted meshd keeping its fleet in `host`, signing with the CAs in `ca_dir`.
async fn replica(host: &TestCluster, ca_dir: &Path) -> LocalMesh {
    LocalMesh::start_configured(None, XdsMode::Delta, |meshd| {
        meshd.cluster_id = "hosted".into();
        meshd.ca_dir = ca_dir.to_path_buf();
        meshd.registry_kubeconfig = Some(host.kubeconfig.clone());
        meshd.registry_namespace = REGISTRY_NAMESPACE.into();
    })
    .await
    .expect("a replica starts")
}

/// Who holds the member's data plane Lease now (empty: nobody).
fn lease_holder(member: &Member) -> String {
    let holder = "{.spec.holderIdentity}";
    member.get("lease", "fleetmesh-data-plane", "istio-system", holder)
}

/// The root of a certificate `mesh` signs for the member's `shop/default`.
async fn root_from(mesh: &LocalMesh, member: &Member) -> String {
    let spiffe_id = format!("spiffe://{}/ns/{NAMESPACE}/sa/default", member.trust_domain);
    let token = member.pod_token(NAMESPACE);
    let chain = certificate(mesh, &token, member.name, &spiffe_id)
        .await
        .expect("a certificate");
    chain.last().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_the_fleet_and_one_drives_each_data_plane() {
    let host = TestCluster::start("fleetmesh-registry").expect("the host cluster starts");
    let member = Member {
        project: "replicated",
        trust_domain: "replicated.svc.id.goog",
        name: "replicated-member",
        cluster: TestCluster::start_with_pod_cidr("fleetmesh-replicated", "198.18.4.0/22")
            .expect("the member cluster starts"),
    };
    // The clusters outlive a run: start from an empty registry and a free Lease.
    let forget = [
        "delete",
        "namespace",
        REGISTRY_NAMESPACE,
        "--ignore-not-found",
    ];
    host.run_kubectl(&forget, None).unwrap();
    let free = [
        "delete",
        "lease",
        "fleetmesh-data-plane",
        "-n",
        "istio-system",
    ];
    let _ = member
        .cluster
        .run_kubectl(&[&free[..], &["--ignore-not-found"]].concat(), None);
    member.apply(WORKLOADS);
    let ca_dir = tempfile::tempdir().unwrap();

    // Registered through replica 1, which drives the member's data plane.
    let mut one = replica(&host, ca_dir.path()).await;
    api(&one)
        .enable_mesh(member.project, &Default::default())
        .await
        .unwrap();
    let output = tempfile::tempdir().unwrap();
    member.install(&one, output.path()).await;
    let token = member.pod_token(NAMESPACE);
    let proxy_one = member.connect(&one, "client-1", NAMESPACE, token).await;
    let proxy_one = proxy_one.expect("replica 1 serves the member");
    let holder_one = eventually(
        "replica 1 holds the Lease",
        Duration::from_secs(60),
        async || Some(lease_holder(&member)).filter(|h| !h.is_empty()),
    )
    .await;
    let stored = ["get", "secrets", "-n", REGISTRY_NAMESPACE, "-o", "name"];
    let secrets = host.run_kubectl(&stored, None).unwrap();
    assert_eq!(
        secrets.lines().count(),
        1,
        "the credential, in the host: {secrets}"
    );

    // Replica 2 starts from the host's registry and serves the same member, under the
    // same project root.
    let two = replica(&host, ca_dir.path()).await;
    assert!(served(&two, &member).await, "replica 2 knows the member");
    let token = member.pod_token(NAMESPACE);
    let proxy_two = member.connect(&two, "client-2", NAMESPACE, token).await;
    let proxy_two = proxy_two.expect("replica 2 serves the member");
    eventually("replica 2's config", Duration::from_secs(30), async || {
        envoy_clusters(&proxy_two).contains(WEB).then_some(())
    })
    .await;
    assert_eq!(
        root_from(&one, &member).await,
        root_from(&two, &member).await
    );

    // A change through replica 2 is seen by replica 1.
    api(&two)
        .enable_mesh("other-project", &Default::default())
        .await
        .unwrap();
    wait_for(
        "replica 1 sees the change",
        Duration::from_secs(30),
        async || {
            let projects = api(&one).projects().await.ok()?;
            (projects["other-project"]["meshEnabled"] == true).then_some(())
        },
    )
    .await
    .unwrap();

    // Both run the member's data plane; only the Lease holder drives it, until it stops.
    for _ in 0..5 {
        assert_eq!(lease_holder(&member), holder_one, "one replica drives it");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(proxy_one);
    one.stop_meshd().await;
    eventually(
        "replica 2 takes the Lease",
        Duration::from_secs(60),
        async || {
            let holder = lease_holder(&member);
            (!holder.is_empty() && holder != holder_one).then_some(())
        },
    )
    .await;
    assert_eq!(nacks(&two), 0);
}
