//! Istio's standard workload metrics from real Envoy sidecars: after requests from the
//! frontend to reviews over mTLS, the frontend reports them as their source and reviews
//! as their destination, each with Istio's labels, as the agent's status port serves
//! them (`fleetmesh_agent::metrics`, the same function `:15020/stats/prometheus` runs).

use fleetmesh_e2e::*;
use std::collections::BTreeMap;
use std::time::Duration;

/// Each `name{labels} value` series of Prometheus text, as its labels.
fn series(text: &str, name: &str) -> Vec<BTreeMap<String, String>> {
    let prefix = format!("{name}{{");
    text.lines()
        .filter_map(|line| line.strip_prefix(&prefix)?.split_once("} "))
        .map(|(labels, _)| {
            labels
                .split("\",")
                .filter_map(|pair| {
                    let (key, value) = pair.split_once("=\"")?;
                    Some((key.to_string(), value.trim_end_matches('"').to_string()))
                })
                .collect()
        })
        .collect()
}

async fn metrics(workload: &Workload) -> String {
    fleetmesh_agent::metrics::scrape(workload.envoy.admin_socket(), None)
        .await
        .expect("Envoy's metrics")
}

/// Whether some series has every label of `wanted`.
fn has(all: &[BTreeMap<String, String>], wanted: &[(&str, &str)]) -> bool {
    all.iter().any(|labels| {
        wanted
            .iter()
            .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_counted_with_istios_labels_at_both_ends() {
    let store = Bookstore::start(XdsMode::Delta).await;
    for _ in 0..10 {
        let (status, _, body) = get(&store.frontend, "http://ratings:9080/").await.unwrap();
        assert_eq!(status, 200);
        assert!(
            !body.contains("x-fleetmesh-peer"),
            "the app sees the sidecars' own headers:\n{body}"
        );
    }
    let frontend = "spiffe://cluster.local/ns/default/sa/frontend";
    let ratings = "spiffe://cluster.local/ns/default/sa/ratings";
    let both_ends = [
        ("source_workload", "frontend"),
        ("source_workload_namespace", "default"),
        ("source_principal", frontend),
        ("source_app", "frontend"),
        ("source_cluster", "local"),
        ("destination_workload", "ratings"),
        ("destination_workload_namespace", "default"),
        ("destination_principal", ratings),
        ("destination_app", "ratings"),
        ("destination_service", "ratings.default.svc.cluster.local"),
        ("destination_service_name", "ratings"),
        ("destination_service_namespace", "default"),
        ("destination_cluster", "local"),
        ("request_protocol", "http"),
        ("response_code", "200"),
        ("response_flags", "-"),
    ];

    let sent = metrics(&store.frontend).await;
    let requests = series(&sent, "istio_requests_total");
    let mut wanted = vec![
        ("reporter", "source"),
        ("connection_security_policy", "unknown"),
    ];
    wanted.extend(both_ends);
    assert!(has(&requests, &wanted), "{wanted:?} in {requests:#?}");
    for histogram in [
        "istio_request_duration_milliseconds_count",
        "istio_request_bytes_count",
        "istio_response_bytes_count",
    ] {
        assert!(
            has(&series(&sent, histogram), &wanted),
            "{histogram}:\n{sent}"
        );
    }

    let received = metrics(&store.ratings).await;
    let requests = series(&received, "istio_requests_total");
    let mut wanted = vec![
        ("reporter", "destination"),
        ("connection_security_policy", "mutual_tls"),
    ];
    wanted.extend(both_ends);
    assert!(has(&requests, &wanted), "{wanted:?} in {requests:#?}");
}

/// A client without a sidecar (plaintext, PERMISSIVE) can put anything in the peer
/// headers: the server's series take at most 63 DNS-label characters of it, and nothing
/// of a value that starts otherwise, so it can mislabel its requests but not grow the
/// proxy's memory with long names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peers_claims_are_cut_to_a_dns_label() {
    let store = Bookstore::start(XdsMode::Delta).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!("http://{}/", store.ratings.address(9080));
    let long = "x".repeat(200);
    for (workload, app) in [(long.as_str(), "EVIL"), ("short", "ok")] {
        let response = client
            .get(&url)
            .header("x-fleetmesh-peer-workload", workload)
            .header("x-fleetmesh-peer-app", app)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let received = metrics(&store.ratings).await;
    let requests = series(&received, "istio_requests_total");
    let cut = "x".repeat(63);
    let plaintext = [
        ("reporter", "destination"),
        ("connection_security_policy", "none"),
    ];
    let claimed = |workload: &str, app: &str| {
        let mut wanted = plaintext.to_vec();
        wanted.extend([("source_workload", workload), ("source_app", app)]);
        has(&requests, &wanted)
    };
    assert!(claimed(&cut, "unknown"), "{requests:#?}");
    assert!(claimed("short", "ok"), "{requests:#?}");
    assert!(
        !received.contains(&"x".repeat(64)),
        "a claim longer than a DNS label reached a series"
    );
}

/// The value of the `istio_requests_total` series ratings reports as destination for
/// the frontend's requests.
async fn received_from_frontend(store: &Bookstore) -> u64 {
    let text = metrics(&store.ratings).await;
    text.lines()
        .filter(|l| l.starts_with("istio_requests_total{"))
        .filter(|l| {
            l.contains("reporter=\"destination\"") && l.contains("source_workload=\"frontend\"")
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum()
}

/// Counts are the proxy's, not a listener's: after the server's inbound listener is
/// replaced (an AuthorizationPolicy now selects it) and the old one has drained, the
/// requests counted before are still counted, as with Istio's stats filter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_outlive_a_listener_update() {
    let store = Bookstore::start(XdsMode::Delta).await;
    for _ in 0..10 {
        let (status, _, _) = get(&store.frontend, "http://ratings:9080/").await.unwrap();
        assert_eq!(status, 200);
    }
    let before = received_from_frontend(&store).await;
    assert!(before >= 10, "counted: {before}");
    let lds = "listener_manager.lds.update_success";
    let updates = envoy_stat(&store.ratings, lds).expect("Envoy's LDS updates");
    store
        .mesh
        .write(
            "ratings-policy.yaml",
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
             metadata: {name: ratings, namespace: default}\n\
             spec: {selector: {matchLabels: {app: ratings}}, action: ALLOW, rules: [{}]}\n",
        )
        .unwrap();
    eventually(
        "ratings' new listener",
        Duration::from_secs(30),
        async || (envoy_stat(&store.ratings, lds)? > updates).then_some(()),
    )
    .await;
    // The local mesh's Envoys drain an old listener for 1 s.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        received_from_frontend(&store).await,
        before,
        "the counts from before the update"
    );
}
