//! Sidecars that fetch their virtual hosts on demand (meshd `--on-demand-routes`, delta
//! xDS, Envoy's VHDS) through real Envoy: a sidecar holds no virtual host until it calls
//! its host, every first call succeeds, and a route change goes only to the sidecar that
//! called that host, as one small resource. (The routing suite, `routing.rs`, runs whole
//! in this mode too.)

use fleetmesh_e2e::*;
use std::time::{Duration, Instant};

/// Services `extra-N`, served by the ratings workload, that nothing has called yet.
const EXTRA: usize = 40;

fn extra_services() -> String {
    (0..EXTRA)
        .map(|n| extra_service(&format!("extra-{n}")))
        .collect::<Vec<_>>()
        .join("---\n")
}

/// Service `name`, served by the ratings workload.
fn extra_service(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\n\
         spec: {{selector: {{app: ratings}}, ports: [{{name: http, port: 9080}}]}}\n"
    )
}

const REVIEWS_V2: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /v2-only}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route: [{destination: {host: reviews, subset: v1}}]
"#;

/// `proxy`'s count of route config (`""`) or virtual host (`"vhds."`) responses it
/// accepted.
fn updates(proxy: &Workload, what: &str) -> u64 {
    let name = format!("http.outbound_http_proxy.rds.{what}http_proxy.update_success");
    envoy_stat(proxy, &name).unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_hold_what_they_call() {
    let mesh = LocalMesh::start_configured(None, XdsMode::Delta, |meshd| {
        meshd.on_demand_routes = true;
    })
    .await
    .expect("meshd starts");
    let store = Bookstore::start_on(mesh).await;

    // The frontend called reviews and ratings (on start); ratings called nothing yet.
    let mut held = envoy_virtual_hosts(&store.frontend);
    held.sort();
    assert_eq!(
        held,
        [
            "http_proxy/ratings.default.svc.cluster.local:9080",
            "http_proxy/reviews.default.svc.cluster.local:9080"
        ]
    );
    assert_eq!(envoy_virtual_hosts(&store.ratings), Vec::<String>::new());

    first_calls_succeed(&store).await;
    a_route_change_reaches_only_the_caller(&store).await;

    // A host the mesh does not know: no virtual host (without capture there is no
    // pass-through), as when every virtual host is sent.
    let nowhere = get(&store.frontend, "http://nowhere:9080/").await.unwrap();
    assert_eq!(nowhere.0, 404);
    // A service removed: its virtual host goes, and calling it again finds nothing.
    store.mesh.remove("extra.yaml").unwrap();
    eventually(
        "extra-0's virtual host to go",
        Duration::from_secs(30),
        async || {
            let held = envoy_virtual_hosts(&store.frontend);
            (!held.iter().any(|h| h.contains("extra-0."))).then_some(())
        },
    )
    .await;
    let gone = get(&store.frontend, "http://extra-0:9080/").await.unwrap();
    assert_eq!(gone.0, 404);
    assert_eq!(nacks(&store.mesh), 0, "Envoy rejected config");
}

/// Every first call to a service nobody called succeeds, GET or POST with a body; what
/// it adds is the fetch of its virtual host and cluster.
async fn first_calls_succeed(store: &Bookstore) {
    store.mesh.write("extra.yaml", &extra_services()).unwrap();
    let cluster = |n: usize| format!("outbound|9080||extra-{n}.default.svc.cluster.local");
    // The ratings sidecar tells when meshd has them all; the frontend has called none.
    let last = format!("http://extra-{}:9080/", EXTRA - 1);
    wait_for_status(&store.ratings, &last, 200).await;
    assert!(
        !envoy_clusters(&store.frontend).contains(&cluster(0)),
        "a cluster nobody called is not held"
    );
    let (mut first, mut warm) = (Vec::new(), Vec::new());
    for n in 0..EXTRA {
        let url = format!("http://extra-{n}:9080/");
        for times in [&mut first, &mut warm] {
            let start = Instant::now();
            let (status, _, _) = get(&store.frontend, &url).await.unwrap();
            times.push(start.elapsed());
            assert_eq!(status, 200, "{url}");
        }
    }
    first.sort();
    warm.sort();
    println!(
        "first call to each of {EXTRA} services: p50 {:?}, p99 {:?}; the call after it: p50 {:?}, p99 {:?}",
        percentile(&first, 0.5),
        percentile(&first, 0.99),
        percentile(&warm, 0.5),
        percentile(&warm, 0.99),
    );
    assert_eq!(envoy_virtual_hosts(&store.frontend).len(), 2 + EXTRA);
    assert!(envoy_clusters(&store.frontend).contains(&cluster(0)));
    assert!(
        !envoy_clusters(&store.reviews_v1).contains(&cluster(0)),
        "reviews-v1 called nothing"
    );

    // A first call with a body: Envoy holds it while it fetches.
    store
        .mesh
        .write("posted.yaml", &extra_service("posted"))
        .unwrap();
    wait_for_status(&store.ratings, "http://posted:9080/", 200).await;
    let posted = store.frontend.client().post("http://posted:9080/orders");
    let response = posted.body("{\"book\": 1}").send().await.unwrap();
    assert_eq!(response.status(), 200, "the first call, a POST with a body");
}

/// A route change reaches the one sidecar that called reviews, as its virtual host
/// alone; the route config itself is not sent again, and nobody else gets anything.
async fn a_route_change_reaches_only_the_caller(store: &Bookstore) {
    let metrics = store.mesh.meshd().metrics();
    let (pushes, bytes) = (metrics.pushes_of("vhds"), metrics.pushed_bytes_of("vhds"));
    let frontend = (
        updates(&store.frontend, ""),
        updates(&store.frontend, "vhds."),
    );
    let ratings = (
        updates(&store.ratings, ""),
        updates(&store.ratings, "vhds."),
    );
    store.mesh.write("reviews-vs.yaml", REVIEWS_V2).unwrap();
    let v2_only = "http://reviews:9080/v2-only";
    eventually(
        "the new virtual host",
        Duration::from_secs(30),
        async || (updates(&store.frontend, "vhds.") > frontend.1).then_some(()),
    )
    .await;
    for _ in 0..10 {
        let (_, version, _) = get(&store.frontend, v2_only).await.unwrap();
        assert_eq!(
            version, "v2",
            "subset v2's cluster, fetched when first routed to"
        );
    }
    let pushed = metrics.pushes_of("vhds") - pushes;
    let pushed_bytes = metrics.pushed_bytes_of("vhds") - bytes;
    println!("the route change: {pushed} VHDS response(s), {pushed_bytes} bytes");
    assert_eq!(pushed, 1, "one response, to the frontend");
    assert!(
        pushed_bytes < 4096,
        "one virtual host: {pushed_bytes} bytes"
    );
    assert_eq!(
        updates(&store.frontend, ""),
        frontend.0,
        "no route config resent"
    );
    assert_eq!(updates(&store.frontend, "vhds."), frontend.1 + 1);
    assert_eq!(
        (
            updates(&store.ratings, ""),
            updates(&store.ratings, "vhds.")
        ),
        ratings,
        "ratings never called reviews"
    );
}
