//! One hosted meshd serving a fleet: two real kube-apiservers, each joined by
//! `fleetmesh install --enable-registration` to its own project. meshd runs with no
//! `--kubeconfig`: it serves a cluster only once it is a member of a project whose mesh
//! is enabled, with the credential install gave it, and routes each proxy by the
//! cluster it names, its token reviewed by that cluster's API server. Each project is its
//! own mesh: its own trust domain (default `PROJECT.svc.id.goog`, or set by `mesh
//! enable`) and root, in its certificates, its clusters' mesh config, injected pods and
//! root ConfigMaps. A proxy of one project sees nothing of the other; a token of one
//! cluster proves nothing in the other, and a CSR for the other project's identity is
//! refused; a removed member's proxies are cut off. A member with no proxy for
//! `--idle-after` is scaled to zero and wakes for the next proxy. (Pod IPs are fake and
//! receive no packet: the proxies run on loopback with the pods' identities.)

use fleetmesh_cli::install::meshd_api::MeshSettings;
use fleetmesh_e2e::fleet::{Member, api, idle, served};
use fleetmesh_e2e::*;
use fleetmesh_kube::testing::{TestCluster, wait_for};
use std::time::Duration;

const NAMESPACE: &str = "shop";

/// A Service `web` (one pod) in both clusters, and one only this cluster has.
fn workloads(own: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{name: {NAMESPACE}}}
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: {NAMESPACE}}}
spec: {{selector: {{app: web}}, ports: [{{name: http, port: 80, targetPort: 8080}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: {own}, namespace: {NAMESPACE}}}
spec: {{selector: {{app: {own}}}, ports: [{{name: http, port: 80}}]}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {NAMESPACE}}}
spec:
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers: [{{name: web, image: web:v1, ports: [{{containerPort: 8080}}]}}]
"#
    )
}

/// A proxy of `member`'s pod `web-<member>` proving itself with `token`.
async fn connect(mesh: &LocalMesh, member: &Member, token: String) -> anyhow::Result<Workload> {
    let pod = format!("web-{}", member.name);
    member.connect(mesh, &pod, NAMESPACE, token).await
}

/// With its proxy gone, `member` scales to zero; its next proxy wakes it and is served
/// (`web` is the EDS cluster it must get).
async fn scales_to_zero_and_wakes(mesh: &LocalMesh, a: &Member, proxy: Workload, web: &str) {
    assert!(!idle(mesh, a).await, "a proxy is connected");
    drop(proxy);
    wait_for("a scaled to zero", Duration::from_secs(30), async || {
        idle(mesh, a).await.then_some(())
    })
    .await
    .unwrap();
    let woken = std::time::Instant::now();
    let proxy = connect(mesh, a, a.pod_token(NAMESPACE))
        .await
        .expect("a wakes for its proxy");
    eventually(
        "the woken a's config",
        Duration::from_secs(30),
        async || envoy_clusters(&proxy).contains(web).then_some(()),
    )
    .await;
    let took = woken.elapsed().as_millis();
    println!("a woke and served its proxy's config in {took} ms");
    assert!(!idle(mesh, a).await);
}

/// `member`'s credential (a day-long token) is renewed half way through its life by its
/// own API server, and not before, while the member (with no proxy) is asleep; the
/// renewed credential wakes it.
async fn credential_renews(mesh: &LocalMesh, member: &Member) {
    use fleetmesh_meshd::fleet::{Fleet, credential};
    wait_for(
        "the member scaled to zero",
        Duration::from_secs(30),
        async || idle(mesh, member).await.then_some(()),
    )
    .await
    .unwrap();
    let dir = Fleet::load(mesh.meshd().state_dir())
        .unwrap()
        .credential_dir(member.project, member.name);
    let egress = fleetmesh_kube::egress::EgressPolicy::denying(&[]).unwrap();
    let token = || std::fs::read_to_string(dir.join("token")).unwrap();
    let before = token();
    let now = std::time::SystemTime::now();
    let renewed = credential::renew_if_due(&dir, &egress, now).await.unwrap();
    assert!(!renewed, "a fresh token is kept");
    let later = now + Duration::from_secs(13 * 3600);
    let renewed = credential::renew_if_due(&dir, &egress, later)
        .await
        .unwrap();
    assert!(renewed, "a token past half its life is renewed");
    assert_ne!(token(), before);
    let woken = certificate(mesh, &member.pod_token(NAMESPACE), member).await;
    assert_eq!(woken, Ok(()));
}

/// Asks meshd's CA for a certificate of `shop/default` in `trust_domain` with `token`,
/// naming `cluster`; the chain (the root last).
async fn certificate_in(
    mesh: &LocalMesh,
    token: &str,
    cluster: &str,
    trust_domain: &str,
) -> Result<Vec<String>, tonic::Code> {
    let identity = fleetmesh_ca::Identity::new(NAMESPACE, "default");
    fleetmesh_e2e::fleet::certificate(mesh, token, cluster, &identity.spiffe_id(trust_domain)).await
}

/// Whether `token` gets a certificate for `member`'s `shop/default`, naming `cluster`.
async fn certificate(mesh: &LocalMesh, token: &str, member: &Member) -> Result<(), tonic::Code> {
    certificate_in(mesh, token, member.name, member.trust_domain)
        .await
        .map(|_| ())
}

/// Each project is its own mesh: its pods' certificates name its trust domain and chain
/// to its own root, its namespaces hold that root (never the other's); a token gets
/// nothing for the other project's identity or in the other's cluster.
async fn each_project_is_its_own_mesh(mesh: &LocalMesh, a: &Member, b: &Member) {
    let mut roots = Vec::new();
    for member in [a, b] {
        let chain = certificate_in(
            mesh,
            &member.pod_token(NAMESPACE),
            member.name,
            member.trust_domain,
        )
        .await
        .expect("a certificate for the member's own identity");
        let expected = format!("spiffe://{}/ns/{NAMESPACE}/sa/default", member.trust_domain);
        assert_eq!(spiffe_id_of(&chain[0]), Some(expected));
        roots.push(chain.last().unwrap().trim().to_string());
    }
    let [root_a, root_b] = &roots[..] else {
        unreachable!()
    };
    assert_ne!(root_a, root_b, "each project has its own root");
    assert_eq!(
        certificate_in(mesh, &a.pod_token(NAMESPACE), a.name, b.trust_domain).await,
        Err(tonic::Code::PermissionDenied),
        "a's token asking for b's identity"
    );
    assert_eq!(
        certificate_in(mesh, &b.pod_token(NAMESPACE), a.name, b.trust_domain).await,
        Err(tonic::Code::Unauthenticated),
        "b's token claiming cluster a"
    );
    // a's pods also trust meshd's own root: what they verify meshd with.
    let published = r"{.data.root-cert\.pem}";
    eventually(
        "a's root in a's namespaces",
        Duration::from_secs(30),
        async || {
            let roots = a.get("configmap", "istio-ca-root-cert", NAMESPACE, published);
            (roots.contains(root_a) && !roots.contains(root_b)).then_some(())
        },
    )
    .await;
}

/// `member`'s managed data plane runs with its own credential: its DataPlaneControls
/// are reconciled, and its injected pods get the proxy version its DataPlaneControl
/// names, and its project's trust domain.
async fn injects_as_its_own_mesh(mesh: &LocalMesh, member: &Member) {
    const VERSION: &str = "1.99.0-fleet";
    // A member with no proxy sleeps after --idle-after, its controller stopped; one
    // connected keeps it awake.
    let _awake = connect(mesh, member, member.pod_token(NAMESPACE))
        .await
        .expect("the member's proxy is served");
    let patch = format!(r#"{{"spec":{{"proxyVersion":"{VERSION}"}}}}"#);
    let args = [
        "patch",
        "dataplanecontrol",
        "asm-managed",
        "--type=merge",
        "-p",
        &patch,
    ];
    member.cluster.run_kubectl(&args, None).unwrap();
    eventually(
        "the member's DataPlaneControl reconciled",
        Duration::from_secs(30),
        async || {
            let seen = "{.metadata.generation} {.status.observedGeneration} {.status.state}";
            let seen = member.get("dataplanecontrol", "asm-managed", "default", seen);
            let [generation, observed, state] = seen.split(' ').collect::<Vec<_>>()[..] else {
                return None;
            };
            (generation == observed && state == "Ready").then_some(())
        },
    )
    .await;
    // The status page's data shows the member's rollout under its cluster's name.
    let page = format!("http://{}/debug/status", mesh.meshd().http_address());
    eventually(
        "the member's rollout on the status page",
        Duration::from_secs(30),
        async || {
            let status: serde_json::Value = reqwest::get(&page).await.ok()?.json().await.ok()?;
            let rollout = &status["rollouts"][member.name]["asm-managed"];
            (rollout["state"] == "Ready").then_some(())
        },
    )
    .await;
    let label = [
        "label",
        "--overwrite",
        "namespace",
        NAMESPACE,
        "istio.io/rev=asm-managed",
    ];
    member.cluster.run_kubectl(&label, None).unwrap();
    // A new name each run: the test clusters outlive a run.
    let name = format!("injected-{}", std::process::id());
    let pod = ["run", &name, "-n", NAMESPACE, "--image=web:v1"];
    member.cluster.run_kubectl(&pod, None).unwrap();
    let proxy = r#"{.spec.containers[?(@.name=="istio-proxy")]}"#;
    let trust_domain = proxy.replace(")]}", r#")].env[?(@.name=="TRUST_DOMAIN")].value}"#);
    let trust_domain = member.get("pod", &name, NAMESPACE, &trust_domain);
    assert_eq!(trust_domain, member.trust_domain);
    let image = member.get("pod", &name, NAMESPACE, &proxy.replace(")]}", ")].image}"));
    assert!(image.ends_with(&format!(":{VERSION}")), "{image}");
    // Its project has routes on demand, which take delta xDS.
    let xds_mode = proxy.replace(")]}", r#")].env[?(@.name=="XDS_MODE")].value}"#);
    assert_eq!(member.get("pod", &name, NAMESPACE, &xds_mode), "delta");
}

/// a's sidecars get every route (meshd's default), b's project has them on demand: its
/// proxy holds route configs without a virtual host until its app calls a host.
async fn routes_as_each_project_says(mesh: &LocalMesh, a: &Workload, b: &Member) {
    eventually(
        "a's proxy to hold web's virtual host",
        Duration::from_secs(30),
        async || {
            let hosts = envoy_virtual_hosts(a);
            hosts.iter().any(|h| h.contains("web.shop")).then_some(())
        },
    )
    .await;
    let proxy_b = connect(mesh, b, b.pod_token(NAMESPACE))
        .await
        .expect("b's proxy is served");
    eventually(
        "b's proxy to hold its route configs",
        Duration::from_secs(30),
        async || (!envoy_route_configs(&proxy_b).is_empty()).then_some(()),
    )
    .await;
    assert_eq!(envoy_virtual_hosts(&proxy_b), Vec::<String>::new());
}

/// A trust domain cannot change under members; each member's mesh config has its own.
async fn trust_domains_are_kept(mesh: &LocalMesh, a: &Member, b: &Member) {
    let other = MeshSettings {
        trust_domain: Some("other.example".into()),
        ..MeshSettings::default()
    };
    let refused = api(mesh)
        .enable_mesh(b.project, &other)
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("409"), "fixed under members: {refused}");
    for member in [a, b] {
        let mesh_config = member.get("configmap", "istio", "istio-system", "{.data.mesh}");
        let expected = format!("trustDomain: {}", member.trust_domain);
        assert!(mesh_config.contains(&expected), "{mesh_config}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hosted_meshd_serves_each_member_as_its_own_mesh() {
    let a = Member {
        project: "proj-a",
        trust_domain: "proj-a.svc.id.goog",
        name: "fleet-a",
        cluster: TestCluster::start("fleetmesh-fleet-a").expect("cluster a starts"),
    };
    let b = Member {
        project: "proj-b",
        trust_domain: "b.example",
        name: "fleet-b",
        cluster: TestCluster::start_with_pod_cidr("fleetmesh-fleet-b", "198.18.4.0/22")
            .expect("cluster b starts"),
    };
    a.apply(&workloads("only-a"));
    b.apply(&workloads("only-b"));
    // Hosted: no cluster of its own; members unused for 2 s scale to zero.
    let mesh = LocalMesh::start_configured(None, XdsMode::Delta, |meshd| {
        meshd.cluster_id = "hosted".into();
        meshd.idle_after = Duration::from_secs(2);
    })
    .await
    .unwrap();
    // b's project chooses its trust domain before its cluster joins, and routes on
    // demand; a keeps the defaults (meshd's: every route pushed).
    let settings = MeshSettings {
        trust_domain: Some(b.trust_domain.into()),
        on_demand_routes: Some(true),
    };
    let enabled = api(&mesh).enable_mesh(b.project, &settings).await.unwrap();
    assert_eq!(enabled.trust_domain, b.trust_domain);
    assert!(enabled.on_demand_routes);
    let output = tempfile::tempdir().unwrap();
    a.install(&mesh, output.path()).await;
    b.install(&mesh, output.path()).await;
    trust_domains_are_kept(&mesh, &a, &b).await;

    // Registered, but no mesh enabled: nothing is served, a pod's token proves nothing.
    assert!(!served(&mesh, &a).await);
    assert_eq!(
        certificate(&mesh, &a.pod_token(NAMESPACE), &a).await,
        Err(tonic::Code::Unauthenticated)
    );
    api(&mesh)
        .enable_mesh(a.project, &Default::default())
        .await
        .unwrap();
    wait_for("both members served", Duration::from_secs(60), async || {
        (served(&mesh, &a).await && served(&mesh, &b).await).then_some(())
    })
    .await
    .unwrap();

    each_project_is_its_own_mesh(&mesh, &a, &b).await;
    injects_as_its_own_mesh(&mesh, &b).await;

    // A proxy of a sees a's services, none of b's.
    let proxy_a = connect(&mesh, &a, a.pod_token(NAMESPACE))
        .await
        .expect("a's proxy is served");
    let web = format!("outbound|80||web.{NAMESPACE}.svc.cluster.local");
    let clusters = eventually(
        "a's proxy to have web",
        Duration::from_secs(30),
        async || {
            let clusters = envoy_clusters(&proxy_a);
            clusters.contains(&web).then_some(clusters)
        },
    )
    .await;
    assert!(
        clusters.contains(&format!("only-a.{NAMESPACE}")),
        "{clusters}"
    );
    assert!(
        !clusters.contains("only-b"),
        "nothing of project b: {clusters}"
    );
    routes_as_each_project_says(&mesh, &proxy_a, &b).await;
    // b's proxy, with b's token but claiming a's cluster, gets nothing.
    assert!(
        connect(&mesh, &a, b.pod_token(NAMESPACE)).await.is_err(),
        "b's token in a's cluster"
    );

    scales_to_zero_and_wakes(&mesh, &a, proxy_a, &web).await;
    credential_renews(&mesh, &b).await;

    // Removing a from the fleet cuts its proxies off.
    api(&mesh)
        .remove_membership(a.project, a.name)
        .await
        .unwrap();
    wait_for("a no longer served", Duration::from_secs(30), async || {
        (certificate(&mesh, &a.pod_token(NAMESPACE), &a).await == Err(tonic::Code::Unauthenticated))
            .then_some(())
    })
    .await
    .unwrap();
    assert!(served(&mesh, &b).await);
    assert_eq!(nacks(&mesh), 0);
}
