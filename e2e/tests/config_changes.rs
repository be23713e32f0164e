//! Config changes reach running Envoys without a restart; bad config never does; and no
//! change fails a request (make-before-break).

use fleetmesh_e2e::*;
use std::time::Duration;

const ALL_TO_V2: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /gone}}]
    route: [{destination: {host: reviews, subset: v1}}]
  - match: [{uri: {prefix: /kept}}]
    route: [{destination: {host: reviews, subset: v2}}]
"#;

const WITHOUT_GONE: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /kept}}]
    route: [{destination: {host: reviews, subset: v2}}]
"#;

const INVALID: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 0}
    - {destination: {host: reviews, subset: v2}, weight: 0}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_reach_envoy_and_bad_config_never_does() {
    let store = Bookstore::start(XdsMode::Delta).await;
    let ms = store
        .apply(
            "reviews-vs.yaml",
            ALL_TO_V2,
            "http://reviews:9080/other",
            404,
        )
        .await;
    println!(
        "change → Envoy: {} ms (file written → first request routed by it)",
        ms.as_millis()
    );
    assert_eq!(
        get(&store.frontend, "http://reviews:9080/gone")
            .await
            .unwrap()
            .1,
        "v1"
    );
    assert_eq!(
        get(&store.frontend, "http://reviews:9080/kept")
            .await
            .unwrap()
            .1,
        "v2"
    );

    // Removing a route removes it.
    let ms = store
        .apply(
            "reviews-vs.yaml",
            WITHOUT_GONE,
            "http://reviews:9080/gone",
            404,
        )
        .await;
    println!("route removal → Envoy: {} ms", ms.as_millis());
    assert_eq!(
        get(&store.frontend, "http://reviews:9080/kept")
            .await
            .unwrap()
            .1,
        "v2"
    );

    an_invalid_file_is_reported_and_never_reaches_envoy(&store).await;

    // Fixing the file clears the error and applies it.
    store
        .apply(
            "reviews-vs.yaml",
            ALL_TO_V2,
            "http://reviews:9080/gone",
            200,
        )
        .await;
    assert!(store.mesh.meshd().config_errors().is_empty());
}

/// An invalid VirtualService is rejected with the file, field and reason; Envoy keeps the
/// last good config and nothing is NACKed.
async fn an_invalid_file_is_reported_and_never_reaches_envoy(store: &Bookstore) {
    store.mesh.write("reviews-vs.yaml", INVALID).unwrap();
    let errors = eventually(
        "meshd to report the invalid file",
        Duration::from_secs(10),
        async || {
            let errors = store.mesh.meshd().config_errors();
            (!errors.is_empty()).then_some(errors)
        },
    )
    .await;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("reviews-vs.yaml"),
        "names the file: {}",
        errors[0]
    );
    assert!(
        errors[0].contains("VirtualService default/reviews"),
        "names the resource: {}",
        errors[0]
    );
    assert!(
        errors[0]
            .contains("spec.http[0].route: the weights of several destinations cannot all be 0"),
        "{}",
        errors[0]
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        get(&store.frontend, "http://reviews:9080/kept")
            .await
            .unwrap()
            .1,
        "v2",
        "last good config serves"
    );
    assert_eq!(
        get(&store.frontend, "http://reviews:9080/gone")
            .await
            .unwrap()
            .0,
        404
    );
    assert_eq!(nacks(&store.mesh), 0, "no NACK");
    let status = syncz(&store.mesh, &store.frontend.node_id)
        .await
        .expect("frontend in syncz");
    for t in ["cluster", "endpoint", "listener", "route"] {
        assert_eq!(
            status[format!("{t}_nack")],
            serde_json::Value::Null,
            "{status}"
        );
        assert_eq!(
            status[format!("{t}_sent")],
            status[format!("{t}_acked")],
            "{status}"
        );
    }
}

const BLUE_GREEN: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets: [{name: blue, labels: {version: v1}}, {name: green, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews, subset: green}}]}]
"#;

const CANARY: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews-canary}
spec: {selector: {app: reviews, version: v1}, ports: [{name: http, port: 9080}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews-canary}}]}]
"#;

/// Under steady traffic: new subsets and routes to them, a new service and a route to it,
/// then both removed at once. Not one request may fail.
async fn make_before_break(mode: XdsMode) {
    let store = Bookstore::start(mode).await;
    let traffic = Traffic::start(&store.frontend, "http://reviews:9080/");
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Subsets renamed and the route moved to a new one, in one change: the new clusters
    // must be warm before the route uses them, the old ones kept until it stops.
    store.mesh.write("services.yaml", &BOOKSTORE_SERVICES.replace("subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]", "subsets: [{name: blue, labels: {version: v1}}, {name: green, labels: {version: v2}}]")).unwrap();
    store
        .mesh
        .write("reviews-vs.yaml", BLUE_GREEN.split("---").nth(1).unwrap())
        .unwrap();
    eventually(
        "all traffic on green (v2)",
        Duration::from_secs(30),
        async || {
            (split(&store.frontend, "http://reviews:9080/", 10)
                .await
                .get("v2")
                == Some(&10))
            .then_some(())
        },
    )
    .await;

    // A new service and the route to it, in one file.
    store.mesh.write("reviews-vs.yaml", CANARY).unwrap();
    eventually(
        "all traffic on the canary (v1)",
        Duration::from_secs(30),
        async || {
            (split(&store.frontend, "http://reviews:9080/", 10)
                .await
                .get("v1")
                == Some(&10))
            .then_some(())
        },
    )
    .await;

    // Route and service removed together.
    store.mesh.remove("reviews-vs.yaml").unwrap();
    eventually(
        "default route back (both versions)",
        Duration::from_secs(30),
        async || {
            (split(&store.frontend, "http://reviews:9080/", 20)
                .await
                .len()
                == 2)
                .then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let report = traffic.stop().await;
    println!(
        "steady traffic: {} requests, {} failed, by version {:?}",
        report.sent,
        report.failures.len(),
        report.versions
    );
    assert!(
        report.sent > 100,
        "traffic flowed throughout ({} requests)",
        report.sent
    );
    assert!(
        report.failures.is_empty(),
        "requests failed during changes: {:?}",
        report.failures
    );
    assert_eq!(nacks(&store.mesh), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn make_before_break_sotw() {
    make_before_break(XdsMode::Sotw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn make_before_break_delta() {
    make_before_break(XdsMode::Delta).await;
}

/// A scaled Deployment costs a push of endpoints alone; in the state-of-the-world
/// protocol it carries only the assignments that changed, and Envoy keeps the others.
async fn endpoint_changes_push_only_endpoints(mode: XdsMode) {
    let store = Bookstore::start(mode).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let metrics = || {
        let m = store.mesh.meshd().metrics();
        ["cds", "eds", "lds", "rds"].map(|t| m.pushes_of(t))
    };
    let before = metrics();
    let eds_bytes = || store.mesh.meshd().metrics().pushed_bytes_of("eds");
    let bytes_before = eds_bytes();
    // One more reviews v1 endpoint (no traffic is sent to it), of the same identity as the
    // others, as when a Deployment scales (a new identity changes the clusters' SAN check).
    store
        .mesh
        .write(
            "extra-endpoint.yaml",
            "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: reviews-extra}\nspec: {address: 127.0.0.2, serviceAccount: reviews, labels: {app: reviews, version: v1}}\n",
        )
        .unwrap();
    eventually(
        "the frontend's Envoy to have the new endpoint",
        Duration::from_secs(30),
        async || {
            let admin = store.frontend.envoy.admin_socket();
            let (_, clusters) =
                fleetmesh_agent::process::admin_request(admin, "GET", "/clusters").ok()?;
            clusters
                .contains("outbound|9080|v1|reviews.default.svc.cluster.local::127.0.0.2:9080::")
                .then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = metrics();
    println!("pushes [cds, eds, lds, rds] before {before:?}, after {after:?}");
    assert!(after[1] > before[1], "endpoints were pushed");
    assert_eq!(
        [after[0], after[2], after[3]],
        [before[0], before[2], before[3]],
        "only endpoints were pushed"
    );
    // (Delta sends changed resources alone by design; its first pushes are no measure.)
    let per_push = (eds_bytes() - bytes_before) / (after[1] - before[1]);
    assert!(
        mode == XdsMode::Delta || per_push < bytes_before / before[1],
        "the push carried only reviews' assignments ({per_push} bytes, all were {})",
        bytes_before / before[1]
    );
    // The clusters the push left out still have their endpoints, and serve.
    let admin = store.frontend.envoy.admin_socket();
    let (_, clusters) = fleetmesh_agent::process::admin_request(admin, "GET", "/clusters").unwrap();
    for (cluster, workload) in [
        ("outbound|9080||ratings", &store.ratings),
        ("outbound|9080|v2|reviews", &store.reviews_v2),
    ] {
        let endpoint = format!(
            "{cluster}.default.svc.cluster.local::{}:9080::",
            workload.ip
        );
        assert!(clusters.contains(&endpoint), "{endpoint} is kept");
    }
    let (status, _, _) = get(&store.frontend, "http://ratings:9080/").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(nacks(&store.mesh), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_changes_push_only_endpoints_sotw() {
    endpoint_changes_push_only_endpoints(XdsMode::Sotw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_changes_push_only_endpoints_delta() {
    endpoint_changes_push_only_endpoints(XdsMode::Delta).await;
}
