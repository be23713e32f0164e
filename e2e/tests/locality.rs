//! Locality-aware load balancing through real Envoy sidecars on loopback: a client in
//! us-west sends everything to the reviews endpoint of its own locality while it is
//! healthy; when outlier detection ejects it, traffic fails over to the DestinationRule's
//! `failover` region (asia) before the other (us-east); `distribute` splits by weight
//! instead, and never to a locality it does not name.

use fleetmesh_e2e::*;

const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: frontend}
spec: {selector: {app: frontend}, ports: [{name: http, port: 9080}]}
"#;

/// Failover by nearness, with asia as us-west's failover region; one 5xx ejects.
const FAILOVER: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      localityLbSetting:
        failover: [{from: us-west, to: asia}]
    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 5m, maxEjectionPercent: 100}
"#;

const DISTRIBUTE: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      localityLbSetting:
        distribute: [{from: "us-west/*", to: {"us-west/*": 50, "us-east/*": 50}}]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locality_failover_and_distribution() {
    let mesh = LocalMesh::start(None, XdsMode::Delta).await.unwrap();
    mesh.write("services.yaml", SERVICES).unwrap();
    let workload = |name: &str, app: &str, version: &str, locality: &str| {
        let spec = WorkloadSpec::new(name, &[("app", app), ("version", version)], 9080);
        mesh.add_workload(spec.in_locality(locality))
    };
    let frontend = workload("frontend", "frontend", "v1", "us-west/zone-a")
        .await
        .unwrap();
    // Kept for the whole test: dropping a workload stops it.
    let mut reviews = Vec::new();
    for (name, version, locality) in [
        ("reviews-west", "west", "us-west/zone-a"),
        ("reviews-east", "east", "us-east/zone-a"),
        ("reviews-asia", "asia", "asia/zone-a"),
    ] {
        reviews.push(workload(name, "reviews", version, locality).await.unwrap());
    }
    wait_for_status(&frontend, "http://reviews:9080/", 200).await;
    // Without a rule, every locality serves.
    let spread = split(&frontend, "http://reviews:9080/", 60).await;
    assert_eq!(spread.len(), 3, "{spread:?}");

    mesh.write("rule.yaml", FAILOVER).unwrap();
    eventually(
        "all traffic in the client's own locality",
        std::time::Duration::from_secs(30),
        async || {
            let counts = split(&frontend, "http://reviews:9080/", 20).await;
            (counts.get("west") == Some(&20)).then_some(())
        },
    )
    .await;
    // A 5xx from the local endpoint ejects it: the failover region takes over, not the
    // region merely listed after it.
    let _ = get(&frontend, "http://reviews:9080/status/503").await;
    let after = split(&frontend, "http://reviews:9080/", 20).await;
    assert_eq!(after.get("asia"), Some(&20), "{after:?}");

    mesh.write("rule.yaml", DISTRIBUTE).unwrap();
    eventually(
        "traffic split between us-west and us-east",
        std::time::Duration::from_secs(30),
        async || {
            let counts = split(&frontend, "http://reviews:9080/", 60).await;
            let both = counts.get("west").is_some_and(|n| *n > 5)
                && counts.get("east").is_some_and(|n| *n > 5);
            (both && counts.len() == 2).then_some(())
        },
    )
    .await;
    assert_eq!(nacks(&mesh), 0);
    drop(reviews);
}
