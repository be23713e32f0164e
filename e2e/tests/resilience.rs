//! Retries, timeouts and fault injection, enforced by real Envoy.

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
  - match: [{uri: {exact: /flaky}}]
    route: [{destination: {host: ratings}}]
    retries: {attempts: 3, retryOn: "5xx"}
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
    let (_, body) = admin_request(store.frontend.envoy.admin_socket(), "GET", "/stats").unwrap();
    let wanted = format!("http.outbound_http_proxy.{name}");
    let line = body
        .lines()
        .find_map(|line| line.strip_prefix(&wanted)?.strip_prefix(": "));
    line.unwrap_or_else(|| panic!("Envoy has no stat {wanted}"))
        .trim()
        .parse()
        .unwrap()
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
    assert_eq!(nacks(&store.mesh), 0);
}
