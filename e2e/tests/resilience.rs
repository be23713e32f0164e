//! Retries, timeouts, fault injection, connection pools and outlier detection, enforced
//! by real Envoy.

use fleetmesh_agent::process::admin_request;
use fleetmesh_e2e::*;
use reqwest::Method;

const RESILIENCE: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - match: [{uri: {exact: /flaky}, headers: {x-case: {exact: no-retry}}}]
    route: [{destination: {host: ratings}}]
    retries: {attempts: 0}
  - match: [{uri: {exact: /flaky}, statPrefix: flaky-retried}]
    route: [{destination: {host: ratings}}]
    retries: {attempts: 3, retryOn: "5xx", backoff: 10ms, retryIgnorePreviousHosts: false}
  - match: [{headers: {x-case: {exact: per-try}}}]
    route: [{destination: {host: ratings}}]
    timeout: 10s
    retries: {attempts: 1, perTryTimeout: 200ms, retryOn: "5xx"}
  - match: [{headers: {x-case: {exact: timeout}}}]
    route: [{destination: {host: ratings}}]
    timeout: 300ms
    retries: {attempts: 0}
  - match: [{headers: {x-case: {exact: abort}}}]
    route: [{destination: {host: ratings}}]
    fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
  - match: [{headers: {x-case: {exact: delay}}}]
    route: [{destination: {host: ratings}}]
    fault: {delay: {fixedDelay: 300ms, percentage: {value: 100}}}
  - match: [{headers: {x-case: {exact: grpc-abort}}}]
    route: [{destination: {host: ratings}}]
    fault: {abort: {grpcStatus: UNAVAILABLE, percentage: {value: 100}}}
  - match: [{headers: {x-case: {exact: no-percentage}}}]
    route: [{destination: {host: ratings}}]
    fault: {abort: {httpStatus: 418}, delay: {fixedDelay: 5s}}
  - route: [{destination: {host: ratings}}]
"#;

async fn status(store: &Bookstore, path: &str, case: &str) -> u16 {
    let url = format!("http://ratings:9080{path}");
    request(&store.frontend, Method::GET, &url, &[("x-case", case)])
        .await
        .unwrap()
        .0
}

/// A counter from the frontend sidecar's outbound HTTP connection manager.
fn outbound_stat(store: &Bookstore, name: &str) -> u64 {
    let wanted = format!("http.outbound_http_proxy.{name}");
    envoy_stat(&store.frontend, &wanted).unwrap_or_else(|| panic!("Envoy has no stat {wanted}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_timeouts_and_faults() {
    let store = Bookstore::start(XdsMode::Delta).await;
    store.mesh.write("ratings-vs.yaml", RESILIENCE).unwrap();
    eventually(
        "the abort route to be served",
        std::time::Duration::from_secs(30),
        async || (status(&store, "/", "abort").await == 418).then_some(()),
    )
    .await;

    // The app fails 2 of every 3 requests: without retries some fail, with 3 retries none.
    let mut failures_without = 0;
    for _ in 0..9 {
        if status(&store, "/flaky", "no-retry").await != 200 {
            failures_without += 1;
        }
    }
    assert_eq!(failures_without, 6, "without retries, 2 of 3 fail");
    for _ in 0..10 {
        assert_eq!(
            status(&store, "/flaky", "").await,
            200,
            "retries hide the flaky upstream"
        );
    }
    // Envoy holds the route's backoff, and the retry may go back to the host it tried.
    let (_, dump) = admin_request(
        store.frontend.envoy.admin_socket(),
        "GET",
        "/config_dump?resource=dynamic_route_configs",
    )
    .unwrap();
    assert!(dump.contains(r#""base_interval": "0.010s""#), "{dump}");

    // perTryTimeout: each try of a 2 s request times out at 200 ms; the route gives up with 504.
    assert_eq!(status(&store, "/delay/2000", "per-try").await, 504);
    assert_eq!(
        status(&store, "/delay/10", "per-try").await,
        200,
        "a fast answer is within the per-try timeout"
    );
    // Route timeout.
    assert_eq!(status(&store, "/delay/2000", "timeout").await, 504);
    assert_eq!(status(&store, "/delay/10", "timeout").await, 200);
    let timeouts = outbound_stat(&store, "downstream_rq_5xx");
    assert!(
        timeouts >= 2,
        "Envoy counted the timeouts as 5xx ({timeouts})"
    );

    // Faults are injected by the client's sidecar: the app never sees the abort.
    assert_eq!(status(&store, "/", "abort").await, 418);
    let before = outbound_stat(&store, "fault.delays_injected");
    let started = std::time::Instant::now();
    assert_eq!(status(&store, "/", "delay").await, 200);
    println!(
        "delayed request took {} ms (fixedDelay 300ms)",
        started.elapsed().as_millis()
    );
    assert_eq!(
        outbound_stat(&store, "fault.delays_injected"),
        before + 1,
        "Envoy injected the delay"
    );
    assert!(
        outbound_stat(&store, "fault.aborts_injected") >= 2,
        "Envoy injected the aborts"
    );
    // A gRPC abort answers a gRPC request with the gRPC status.
    let grpc = store
        .frontend
        .client()
        .get("http://ratings:9080/")
        .header("x-case", "grpc-abort")
        .header("content-type", "application/grpc")
        .send()
        .await
        .unwrap();
    assert_eq!(grpc.headers()["grpc-status"], "14", "UNAVAILABLE");
    // Without a percentage, as in Istio, nothing is injected.
    let (aborts, delays) = (
        outbound_stat(&store, "fault.aborts_injected"),
        outbound_stat(&store, "fault.delays_injected"),
    );
    assert_eq!(status(&store, "/", "no-percentage").await, 200);
    assert_eq!(outbound_stat(&store, "fault.aborts_injected"), aborts);
    assert_eq!(outbound_stat(&store, "fault.delays_injected"), delays);
    // The retried route's requests are counted under its statPrefix.
    let (_, stats) = admin_request(store.frontend.envoy.admin_socket(), "GET", "/stats").unwrap();
    assert!(
        stats.lines().any(|l| l.contains(".route.flaky-retried.")),
        "route statistics under the prefix"
    );
    assert_eq!(nacks(&store.mesh), 0);
}

/// A counter of the frontend sidecar's cluster for ratings:9080.
fn ratings_cluster_stat(store: &Bookstore, name: &str) -> u64 {
    let cluster = "cluster.outbound|9080||ratings.default.svc.cluster.local";
    envoy_stat(&store.frontend, &format!("{cluster}.{name}")).unwrap_or(0)
}

/// The frontend sidecar's config dump of its cluster for ratings:9080.
fn ratings_cluster_config(store: &Bookstore) -> Option<String> {
    let (_, clusters) = admin_request(
        store.frontend.envoy.admin_socket(),
        "GET",
        "/config_dump?resource=dynamic_active_clusters&name_regex=outbound.9080..ratings.*",
    )
    .ok()?;
    Some(clusters)
}

/// The frontend sidecar's established connections to ratings' sidecar, as `ss` shows
/// them with their timers.
fn connections_to(store: &Bookstore) -> String {
    let output = std::process::Command::new("ss")
        .args(["-tnoH", "state", "established", "dst"])
        .arg(store.ratings.ip.to_string())
        .output()
        .expect("ss runs");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// DestinationRule connection pool settings reach the sockets and streams Envoy opens:
/// HTTP/1.1 upgraded to HTTP/2, TCP keepalive on the connection, and connections aged out
/// after maxConnectionDuration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_pool_settings_shape_upstream_connections() {
    let store = Bookstore::start(XdsMode::Sotw).await;
    let rule = |tcp: &str| {
        format!(
            r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: ratings}}
spec:
  host: ratings
  trafficPolicy:
    connectionPool:
      tcp: {{tcpKeepalive: {{time: 60s, interval: 10s, probes: 3}}{tcp}}}
      http: {{h2UpgradePolicy: UPGRADE, maxConcurrentStreams: 10, http2KeepAlive: {{interval: 30s, timeout: 5s}}}}
    outlierDetection: {{splitExternalLocalOriginErrors: true, consecutiveLocalOriginFailures: 3}}
    loadBalancer:
      consistentHash:
        httpCookie: {{name: session, ttl: 3600s, attributes: [{{name: SameSite, value: Strict}}]}}
        maglev: {{tableSize: 65537}}
"#
        )
    };
    store.mesh.write("ratings-dr.yaml", &rule("")).unwrap();
    eventually(
        "requests to ratings over HTTP/2",
        std::time::Duration::from_secs(30),
        async || {
            assert_eq!(status(&store, "/", "").await, 200);
            (ratings_cluster_stat(&store, "upstream_cx_http2_total") > 0).then_some(())
        },
    )
    .await;
    let (_, clusters) = admin_request(
        store.frontend.envoy.admin_socket(),
        "GET",
        "/config_dump?resource=dynamic_active_clusters",
    )
    .unwrap();
    assert!(
        clusters.contains(r#""consecutive_local_origin_failure": 3"#),
        "local-origin failures are counted apart"
    );
    assert!(
        clusters.contains(r#""lb_policy": "MAGLEV""#),
        "Maglev hashing"
    );
    // A request without the hash cookie gets one, with the rule's attributes.
    let response = store
        .frontend
        .client()
        .get("http://ratings:9080/")
        .send()
        .await
        .unwrap();
    let cookie = response.headers()["set-cookie"].to_str().unwrap();
    assert!(
        cookie.starts_with("session=") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    // The keepalive timer shows once no retransmission timer is pending.
    eventually(
        "SO_KEEPALIVE on the connection to ratings",
        std::time::Duration::from_secs(10),
        async || {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            connections_to(&store)
                .contains("timer:(keepalive")
                .then_some(())
        },
    )
    .await;

    store
        .mesh
        .write("ratings-dr.yaml", &rule(", maxConnectionDuration: 1s"))
        .unwrap();
    eventually(
        "a connection to ratings closed for its age",
        std::time::Duration::from_secs(30),
        async || {
            assert_eq!(status(&store, "/", "").await, 200);
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            (ratings_cluster_stat(&store, "upstream_cx_max_duration_reached") > 0).then_some(())
        },
    )
    .await;
    assert_eq!(nacks(&store.mesh), 0);
}

/// `warmup` becomes Envoy's slow start on the cluster, with the rule's window, starting
/// share and aggression; requests keep flowing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warmup_becomes_slow_start() {
    let store = Bookstore::start(XdsMode::Delta).await;
    let rule = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
                metadata: {name: ratings}\nspec:\n  host: ratings\n  trafficPolicy:\n    \
                loadBalancer: {simple: LEAST_REQUEST, warmup: {duration: 30s, minimumPercent: 20, aggression: 2}}\n";
    store.mesh.write("ratings-dr.yaml", rule).unwrap();
    let slow_start = eventually(
        "the slow start on ratings' cluster",
        std::time::Duration::from_secs(30),
        async || {
            let clusters = ratings_cluster_config(&store)?;
            let dump: serde_json::Value = serde_json::from_str(&clusters).ok()?;
            let cluster = &dump["configs"][0]["cluster"];
            // Least request is also the default: wait for the rule's slow start.
            let slow_start = &cluster["least_request_lb_config"]["slow_start_config"];
            (cluster["lb_policy"] == "LEAST_REQUEST" && !slow_start.is_null())
                .then(|| slow_start.clone())
        },
    )
    .await;
    assert_eq!(slow_start["slow_start_window"], "30s", "{slow_start}");
    assert_eq!(
        slow_start["min_weight_percent"]["value"], 20.0,
        "{slow_start}"
    );
    assert_eq!(
        slow_start["aggression"]["default_value"], 2.0,
        "{slow_start}"
    );
    assert_eq!(status(&store, "/", "").await, 200);
    assert_eq!(nacks(&store.mesh), 0);
}

/// Istio's deprecated `consecutiveErrors`, as istiod applies it: gateway errors (503 here)
/// in a row eject a host, other 5xx answers never do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deprecated_consecutive_errors_eject_on_gateway_errors_alone() {
    let store = Bookstore::start(XdsMode::Sotw).await;
    let rule = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
                metadata: {name: ratings}\nspec:\n  host: ratings\n  trafficPolicy:\n    \
                outlierDetection: {consecutiveErrors: 2, interval: 1s, baseEjectionTime: 1s, maxEjectionPercent: 100}\n";
    store.mesh.write("ratings-dr.yaml", rule).unwrap();
    eventually(
        "outlier detection on ratings' cluster",
        std::time::Duration::from_secs(30),
        async || {
            ratings_cluster_config(&store)?
                .contains("consecutive_gateway_failure")
                .then_some(())
        },
    )
    .await;
    // Envoy's own threshold for 5xx answers is 5: six 500s are detected, not enforced.
    for _ in 0..6 {
        assert_eq!(status(&store, "/status/500", "").await, 500);
    }
    let detected = "outlier_detection.ejections_detected_consecutive_5xx";
    assert!(ratings_cluster_stat(&store, detected) > 0, "{detected}");
    assert_eq!(
        ratings_cluster_stat(&store, "outlier_detection.ejections_enforced_total"),
        0,
        "a 500 is not a gateway error"
    );
    for _ in 0..2 {
        assert_eq!(status(&store, "/status/503", "").await, 503);
    }
    // (Istio's default retries may send each request up to three times.)
    let enforced = "outlier_detection.ejections_enforced_consecutive_gateway_failure";
    assert!(
        ratings_cluster_stat(&store, enforced) >= 1,
        "two 503s in a row eject ratings' host"
    );
    assert_eq!(nacks(&store.mesh), 0);
}
