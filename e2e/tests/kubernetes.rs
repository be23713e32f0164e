//! meshd watching a real kube-apiserver: a real Envoy carrying a pod's metadata gets EDS
//! with exactly the Running pods of a Deployment, through scaling, an API server restart
//! and deletion. (The pod IPs come from 198.18.0.0/22 and never receive a packet: no request
//! is sent through the proxy.)

use fleetmesh_e2e::kube_eds::{
    SERVICE, a_reviews_pod, deploy_reviews, deployment, envoy_endpoints, reviews_cluster,
    reviews_running,
};
use fleetmesh_e2e::*;
use fleetmesh_kube::testing::{TestCluster, TestNamespace, wait_for};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DeleteParams, ListParams};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_endpoints_follow_a_deployment() {
    // A cluster of its own: this test restarts the API server.
    let cluster = TestCluster::start("fleetmesh-kube-restart").expect("the local cluster starts");
    let client = cluster.client().await.unwrap();
    let namespace = TestNamespace::create(&client, "eds").await.unwrap();
    let three = deploy_reviews(&namespace, 3).await;

    let mesh = LocalMesh::start_with(None, XdsMode::Delta, Some(cluster.kubeconfig.clone()))
        .await
        .expect("meshd watches the cluster");
    let pod = a_reviews_pod(&namespace).await;
    let proxy = mesh
        .add_proxy(
            "sidecar",
            &pod,
            &namespace.name,
            "default",
            &[("app", "reviews"), ("version", "v1")],
        )
        .await
        .expect("Envoy starts");
    let eds_cluster = reviews_cluster(&namespace);
    let exact = async |want: &BTreeSet<String>, what: &str| {
        let start = Instant::now();
        eventually(what, Duration::from_secs(60), async || {
            (envoy_endpoints(&proxy, &eds_cluster) == *want).then_some(())
        })
        .await;
        start.elapsed()
    };
    exact(&three, "Envoy to have the 3 pods").await;

    namespace.apply(&deployment(5)).await.unwrap();
    let five = reviews_running(&namespace, 5).await;
    let took = exact(&five, "Envoy to have the 5 pods").await;
    println!(
        "5 running pods → Envoy's endpoints: {} ms",
        took.as_millis()
    );

    // The API server goes away and comes back: meshd's watches resume on their own, Envoy
    // keeps its endpoints meanwhile, and later changes still arrive.
    cluster.restart_apiserver().unwrap();
    assert_eq!(
        envoy_endpoints(&proxy, &eds_cluster),
        five,
        "Envoy keeps its endpoints"
    );
    namespace.apply(&deployment(2)).await.unwrap();
    let two = reviews_running(&namespace, 2).await;
    exact(
        &two,
        "Envoy to have the 2 pods after the API server restart",
    )
    .await;

    Api::<Deployment>::namespaced(client.clone(), &namespace.name)
        .delete("reviews", &DeleteParams::default())
        .await
        .unwrap();
    exact(&BTreeSet::new(), "Envoy to have no endpoints").await;
    assert_eq!(nacks(&mesh), 0);
    namespace.delete().await.unwrap();
}

/// Route names in Envoy's current route configs (from its admin config dump).
fn envoy_route_dump(proxy: &Workload) -> String {
    let path = "/config_dump?resource=dynamic_route_configs";
    fleetmesh_agent::process::admin_request(proxy.envoy.admin_socket(), "GET", path)
        .map(|(_, body)| body)
        .unwrap_or_default()
}

fn kubectl(cluster: &TestCluster, namespace: &str, verb: &str, yaml: &str) {
    if let Err(error) = cluster.run_kubectl(&[verb, "-n", namespace, "-f", "-"], Some(yaml)) {
        panic!("kubectl {verb} failed: {error}");
    }
}

const ROUTE: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - name: from-kubectl
    match: [{uri: {prefix: /api}}]
    route: [{destination: {host: reviews}}]
"#;

/// Valid to the API server's schema, invalid to Istio: no destination has any weight.
const BROKEN: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: broken}
spec:
  hosts: [reviews.other.svc.cluster.local]
  http:
  - name: broken-route
    route:
    - {destination: {host: reviews, subset: v1}, weight: 0}
    - {destination: {host: reviews, subset: v2}, weight: 0}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtual_services_from_kubectl_reach_envoy() {
    let (cluster, client) = TestCluster::start_with_istio("fleetmesh-kube-tests")
        .await
        .expect("the local cluster starts and serves Istio's CRDs");
    let namespace = TestNamespace::create(&client, "vs").await.unwrap();
    namespace
        .apply(&format!("{SERVICE}---{}", deployment(2)))
        .await
        .unwrap();
    let mesh = LocalMesh::start_with(None, XdsMode::Delta, Some(cluster.kubeconfig.clone()))
        .await
        .expect("meshd watches the cluster");
    let proxy = mesh
        .add_proxy(
            "sidecar",
            "client-0",
            &namespace.name,
            "client",
            &[("app", "client")],
        )
        .await
        .expect("Envoy starts");

    let start = Instant::now();
    kubectl(&cluster, &namespace.name, "apply", ROUTE);
    eventually(
        "the VirtualService in Envoy",
        Duration::from_secs(30),
        async || {
            envoy_route_dump(&proxy)
                .contains("\"from-kubectl\"")
                .then_some(())
        },
    )
    .await;
    println!("kubectl apply → Envoy: {} ms", start.elapsed().as_millis());

    kubectl(&cluster, &namespace.name, "apply", BROKEN);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !envoy_route_dump(&proxy).contains("broken-route"),
        "an invalid VirtualService never reaches Envoy"
    );
    assert!(
        envoy_route_dump(&proxy).contains("\"from-kubectl\""),
        "the valid config keeps serving"
    );
    assert_eq!(nacks(&mesh), 0);
    // The user learns why from the object's Events (`kubectl describe vs broken`).
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(client.clone(), &namespace.name);
    let note = wait_for(
        "an Event on the invalid VirtualService",
        Duration::from_secs(30),
        async || {
            let list = events.list(&ListParams::default()).await.ok()?;
            list.items.into_iter().find_map(|e| {
                let about_broken = e.regarding.as_ref()?.name.as_deref() == Some("broken");
                (about_broken && e.reason.as_deref() == Some("InvalidConfig")).then_some(e.note?)
            })
        },
    )
    .await
    .unwrap();
    assert!(
        note.contains("spec.http[0].route: the weights of several destinations cannot all be 0"),
        "{note}"
    );

    kubectl(&cluster, &namespace.name, "delete", ROUTE);
    eventually(
        "the VirtualService gone from Envoy",
        Duration::from_secs(30),
        async || (!envoy_route_dump(&proxy).contains("from-kubectl")).then_some(()),
    )
    .await;
    namespace.delete().await.unwrap();
}

/// Names of the clusters Envoy holds (from its admin `/clusters`).
fn envoy_clusters(proxy: &Workload) -> BTreeSet<String> {
    let (_, clusters) =
        fleetmesh_agent::process::admin_request(proxy.envoy.admin_socket(), "GET", "/clusters")
            .unwrap_or_default();
    clusters
        .lines()
        .filter_map(|line| line.split("::").next())
        .map(str::to_string)
        .collect()
}

/// Envoy's listeners as its admin config dump shows them.
fn envoy_listeners(proxy: &Workload) -> String {
    let (_, dump) = fleetmesh_agent::process::admin_request(
        proxy.envoy.admin_socket(),
        "GET",
        "/config_dump?resource=dynamic_listeners",
    )
    .unwrap_or_default();
    dump
}

/// The outbound cluster of the reviews Service in `namespace`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_limits_what_one_namespace_sees() {
    let (cluster, client) = TestCluster::start_with_istio("fleetmesh-kube-tests")
        .await
        .expect("the local cluster starts and serves Istio's CRDs");
    let scoped = TestNamespace::create(&client, "scoped").await.unwrap();
    let open = TestNamespace::create(&client, "open").await.unwrap();
    for namespace in [&scoped, &open] {
        namespace.apply(SERVICE).await.unwrap();
    }
    let mesh = LocalMesh::start_with(None, XdsMode::Delta, Some(cluster.kubeconfig.clone()))
        .await
        .expect("meshd watches the cluster");
    let in_scoped = mesh
        .add_proxy(
            "sidecar",
            "client-0",
            &scoped.name,
            "client",
            &[("app", "client")],
        )
        .await
        .unwrap();
    let in_open = mesh
        .add_proxy(
            "sidecar",
            "client-0",
            &open.name,
            "client",
            &[("app", "client")],
        )
        .await
        .unwrap();
    let both: BTreeSet<String> = [reviews_cluster(&scoped), reviews_cluster(&open)].into();
    for proxy in [&in_scoped, &in_open] {
        eventually(
            "both namespaces' services",
            Duration::from_secs(30),
            async || envoy_clusters(proxy).is_superset(&both).then_some(()),
        )
        .await;
    }

    kubectl(
        &cluster,
        &scoped.name,
        "apply",
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default}\nspec: {egress: [{hosts: [\"./*\"]}]}\n",
    );
    eventually(
        "the scoped namespace to see only its own service",
        Duration::from_secs(30),
        async || {
            let seen = envoy_clusters(&in_scoped);
            (seen.contains(&reviews_cluster(&scoped)) && !seen.contains(&reviews_cluster(&open)))
                .then_some(())
        },
    )
    .await;
    assert!(
        envoy_clusters(&in_open).is_superset(&both),
        "other namespaces keep seeing everything"
    );
    assert_eq!(nacks(&mesh), 0);
    scoped.delete().await.unwrap();
    open.delete().await.unwrap();
}

/// MeshConfig (ConfigMap `istio` in istio-system) applies live: moving `rootNamespace` to a
/// namespace holding a default Sidecar scopes every other namespace to itself; an empty
/// `defaultProviders.metrics` takes Istio's workload metrics off every listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_config_root_namespace_applies_live() {
    // A cluster of its own: mesh-wide settings would reach the other tests' meshd.
    let cluster =
        TestCluster::start("fleetmesh-kube-meshconfig").expect("the local cluster starts");
    // Istio's CRDs arrive after meshd started (as when a mesh is installed into a cluster
    // a hosted meshd already watches): meshd picks the new kinds up by itself.
    let removed = cluster
        .kubectl()
        .args(["delete", "crd", "-l", "app.kubernetes.io/part-of=fleetmesh"])
        .args(["--ignore-not-found", "--wait"])
        .status()
        .unwrap();
    assert!(removed.success());
    let client = cluster.client().await.unwrap();
    fleetmesh_kube::testing::apply(
        &client,
        None,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: istio-system}\n",
    )
    .await
    .unwrap();
    let app = TestNamespace::create(&client, "app").await.unwrap();
    let other = TestNamespace::create(&client, "other").await.unwrap();
    let root = TestNamespace::create(&client, "meshroot").await.unwrap();
    app.apply(SERVICE).await.unwrap();
    other.apply(SERVICE).await.unwrap();

    let mesh = LocalMesh::start_with(None, XdsMode::Delta, Some(cluster.kubeconfig.clone()))
        .await
        .expect("meshd watches the cluster");
    cluster
        .install_istio_crds()
        .await
        .expect("Istio CRDs install");
    root.apply("apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default}\nspec: {egress: [{hosts: [\"./*\"]}]}\n").await.unwrap();
    let proxy = mesh
        .add_proxy(
            "sidecar",
            "client-0",
            &app.name,
            "client",
            &[("app", "client")],
        )
        .await
        .unwrap();
    eventually(
        "both namespaces' services (istio-system is the root)",
        Duration::from_secs(30),
        async || {
            let seen = envoy_clusters(&proxy);
            (seen.contains(&reviews_cluster(&app)) && seen.contains(&reviews_cluster(&other)))
                .then_some(())
        },
    )
    .await;

    let mesh_config = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: istio, namespace: istio-system}}\ndata:\n  mesh: |\n    rootNamespace: {}\n    accessLogFile: /dev/stdout\n",
        root.name
    );
    fleetmesh_kube::testing::apply(&client, None, &mesh_config)
        .await
        .unwrap();
    eventually(
        "the root namespace's Sidecar to scope the app namespace",
        Duration::from_secs(30),
        async || {
            let seen = envoy_clusters(&proxy);
            (seen.contains(&reviews_cluster(&app)) && !seen.contains(&reviews_cluster(&other)))
                .then_some(())
        },
    )
    .await;

    // Istio's standard metrics turned off mesh-wide (no metrics provider): no stats logger
    // or peer headers on any listener, and back when the provider is named again.
    let listeners_log_stats = || {
        let (_, dump) = fleetmesh_agent::process::admin_request(
            proxy.envoy.admin_socket(),
            "GET",
            "/config_dump?resource=dynamic_listeners",
        )
        .unwrap_or_default();
        (!dump.is_empty()).then(|| dump.contains("envoy.access_loggers.stats"))
    };
    assert_eq!(listeners_log_stats(), Some(true));
    for (providers, logged) in [("[]", false), ("[prometheus]", true)] {
        let without = mesh_config.replace(
            "    accessLogFile: /dev/stdout\n",
            &format!("    defaultProviders: {{metrics: {providers}}}\n"),
        );
        fleetmesh_kube::testing::apply(&client, None, &without)
            .await
            .unwrap();
        eventually(
            &format!("listeners with metrics providers {providers}"),
            Duration::from_secs(30),
            async || (listeners_log_stats() == Some(logged)).then_some(()),
        )
        .await;
    }
    assert_eq!(nacks(&mesh), 0);
}

/// A proxy is what its Pod is: meshd takes labels and service account from the Pod its
/// node id names, not from the metadata the proxy sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_is_matched_to_its_pod() {
    let (cluster, client) = TestCluster::start_with_istio("fleetmesh-kube-tests")
        .await
        .expect("the local cluster starts and serves Istio's CRDs");
    let namespace = TestNamespace::create(&client, "pods").await.unwrap();
    deploy_reviews(&namespace, 1).await;
    let pod = a_reviews_pod(&namespace).await;

    let mesh = LocalMesh::start_with(None, XdsMode::Delta, Some(cluster.kubeconfig.clone()))
        .await
        .expect("meshd watches the cluster");
    // Both claim labels that select nothing; only the first is a Pod of the reviews Service.
    let real = mesh
        .add_proxy(
            "sidecar",
            &pod,
            &namespace.name,
            "default",
            &[("app", "impostor")],
        )
        .await
        .unwrap();
    let unknown = mesh
        .add_proxy(
            "sidecar",
            "not-a-pod",
            &namespace.name,
            "impostor",
            &[("app", "impostor")],
        )
        .await
        .unwrap();
    let inbound = |proxy: &Workload| envoy_clusters(proxy).contains("inbound|8080||");
    eventually(
        "the pod's proxy to serve reviews' inbound port",
        Duration::from_secs(30),
        async || inbound(&real).then_some(()),
    )
    .await;
    assert!(
        !inbound(&unknown),
        "a proxy no Pod backs keeps its own (impostor) labels"
    );

    // security.istio.io from kubectl reaches the Pod's proxy: an AuthorizationPolicy
    // selecting it becomes an RBAC filter on its inbound listener.
    namespace
        .apply(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
             metadata: {name: reviews-deny-admin}\n\
             spec: {selector: {matchLabels: {app: reviews}}, action: DENY, \
             rules: [{to: [{operation: {paths: [/admin*]}}]}]}\n",
        )
        .await
        .unwrap();
    eventually(
        "the policy to reach the pod's proxy",
        Duration::from_secs(30),
        async || {
            envoy_listeners(&real)
                .contains("envoy.filters.http.rbac")
                .then_some(())
        },
    )
    .await;
    assert_eq!(nacks(&mesh), 0);
    namespace.delete().await.unwrap();
}

/// `analyze` reading a live cluster: a Gateway selecting no pod, a route to a subset and
/// through a Gateway nothing defines are found; files analyzed with the cluster complete
/// what it lacks, as if applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analyze_reads_a_live_cluster() {
    use fleetmesh_cli::analyze::Objects;
    let (cluster, client) = TestCluster::start_with_istio("fleetmesh-kube-tests")
        .await
        .expect("the local cluster starts and serves Istio's CRDs");
    let namespace = TestNamespace::create(&client, "analyze").await.unwrap();
    deploy_reviews(&namespace, 1).await;
    namespace
        .apply(
            r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: served}
spec:
  selector: {app: reviews}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: unserved}
spec:
  selector: {istio: no-such-gateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  gateways: [mesh, served, elsewhere]
  http: [{route: [{destination: {host: reviews, subset: v9}}]}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: reviews}
spec: {workloadSelector: {labels: {app: reviews}}, egress: [{hosts: ["./*"]}]}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: reviews-too}
spec: {workloadSelector: {labels: {app: reviews}}, egress: [{hosts: ["./*", "istio-system/*"]}]}
"#,
        )
        .await
        .unwrap();
    let kube = fleetmesh_cli::kubeconfig::connect(Some(&cluster.kubeconfig), None)
        .await
        .unwrap();
    // Other suites share the cluster: only this namespace's findings are this test's.
    let ours = |objects: Objects| -> Vec<String> {
        objects
            .findings()
            .into_iter()
            .filter(|m| m.resource.contains(&format!(" {}/", namespace.name)))
            .map(|m| format!("{} {}: {}", m.code, m.resource, m.text))
            .collect()
    };
    let from_cluster = Objects::from_cluster(&kube, "cluster test").await.unwrap();
    let ns = &namespace.name;
    let pod = a_reviews_pod(&namespace).await;
    let both_sidecars = format!(
        "The Sidecars [\"reviews\", \"reviews-too\"] in namespace {ns:?} select the same workload pod {pod:?}, which can lead to undefined behavior."
    );
    assert_eq!(
        ours(from_cluster),
        [
            format!(
                "IST0101 VirtualService {ns}/reviews: Referenced gateway not found: \"elsewhere\""
            ),
            format!(
                "IST0101 VirtualService {ns}/reviews: Referenced host+subset in destinationrule not found: \"reviews+v9\""
            ),
            format!(
                "IST0101 Gateway {ns}/unserved: Referenced selector not found: \"istio=no-such-gateway\" (no pod has these labels)"
            ),
            format!("IST0110 Sidecar {ns}/reviews: {both_sidecars}"),
            format!("IST0110 Sidecar {ns}/reviews-too: {both_sidecars}"),
        ]
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("subsets.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
             metadata: {{name: reviews, namespace: {ns}}}\n\
             spec: {{host: reviews, subsets: [{{name: v9, labels: {{version: v9}}}}]}}\n"
        ),
    )
    .unwrap();
    let mut together = Objects::from_files(&[file]).unwrap();
    together.add(Objects::from_cluster(&kube, "cluster test").await.unwrap());
    let found = ours(together);
    assert_eq!(found.len(), 4, "the file defines the subset: {found:#?}");
    namespace.delete().await.ok();
}
