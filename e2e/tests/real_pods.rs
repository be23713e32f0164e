//! The pod data path on the local cluster's real node (kubelet, containerd, CNI bridge,
//! kube-proxy): pods injected by meshd's webhook run the proxy image, get their
//! certificate with their projected token, and talk STRICT mutual TLS through captured
//! traffic, first with the `istio-init` container, then with the CNI plugin
//! (`--option cni-managed`); and again with routes on demand (meshd
//! `--on-demand-routes`: injected proxies speak delta xDS and fetch each virtual host
//! when they first call its host). Every step is a request a pod really sends.
//!
//! Needs the images: `scripts/build-images --profile debug` (scripts/test builds them).
//! Pods and Services get 10.244.0.0/24 and 10.96.0.0/24 on the node's own bridge; no
//! packet leaves the machine.

use fleetmesh_e2e::real_node::{
    CLUSTER, InNamespace, NODE_IP, install, pod_ip, pods, restarted, sample_image,
    shop_through_gateway, start_cluster, start_meshd, start_meshd_with,
};
use fleetmesh_inject::{INIT_CONTAINER, PROXY_CONTAINER};
use fleetmesh_kube::testing::TestCluster;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};

/// The sample app as a Deployment: `reviews` answers HTTP on 9080 (declared by its
/// Service) and echoes TCP on 9090 (declared by nothing); `ledger` echoes TCP on 7000,
/// declared by its Service as TCP; `client` only runs curl.
fn workloads() -> String {
    let mut yaml = String::from(
        r#"
apiVersion: v1
kind: ServiceAccount
metadata: {name: reviews}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: client}
---
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: ledger}
---
apiVersion: v1
kind: Service
metadata: {name: ledger}
spec:
  selector: {app: ledger}
  ports: [{name: tcp, port: 7000}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: ledger}
spec:
  selector: {matchLabels: {app: ledger}}
  template:
    metadata: {labels: {app: ledger}}
    spec:
      serviceAccountName: ledger
      terminationGracePeriodSeconds: 1
      containers:
      - name: ledger
        image: SAMPLE_IMAGE
        args: [--service, ledger, --tcp-echo, "0.0.0.0:7000"]
        readinessProbe: {tcpSocket: {port: 7000}, periodSeconds: 1}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: client}
spec:
  selector: {matchLabels: {app: client}}
  template:
    metadata: {labels: {app: client}}
    spec:
      serviceAccountName: client
      terminationGracePeriodSeconds: 1
      containers:
      - name: client
        image: SAMPLE_IMAGE
        command: [sleep, infinity]
"#,
    );
    for version in ["v1", "v2"] {
        yaml.push_str(&format!(
            r#"
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: reviews-{version}}}
spec:
  selector: {{matchLabels: {{app: reviews, version: {version}}}}}
  template:
    metadata:
      labels: {{app: reviews, version: {version}}}
      annotations: {{prometheus.io/scrape: "true", prometheus.io/port: "9080", prometheus.io/path: /metrics}}
    spec:
      serviceAccountName: reviews
      terminationGracePeriodSeconds: 1
      containers:
      - name: reviews
        image: SAMPLE_IMAGE
        args: [--listen, "0.0.0.0:9080", --service, reviews, --version, {version}, --tcp-echo, "0.0.0.0:9090"]
        ports: [{{name: http, containerPort: 9080}}]
        readinessProbe: {{httpGet: {{path: /ready, port: 9080}}, periodSeconds: 1}}
        livenessProbe: {{tcpSocket: {{port: 9080}}, periodSeconds: 1}}
"#
        ));
    }
    yaml.replace("SAMPLE_IMAGE", &sample_image())
}

/// A script sending a line to the ledger Service's TCP echo and printing the answer.
const LEDGER_ECHO: &str = "timeout 5 bash -c 'exec 3<>/dev/tcp/ledger/7000; echo tcp-through-the-mesh >&3; head -n1 <&3' || true";

fn deny_ledger_to(principal: &str) -> String {
    format!(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: ledger-deny}}
spec:
  selector: {{matchLabels: {{app: ledger}}}}
  action: DENY
  rules: [{{from: [{{source: {{principals: ["{principal}"]}}}}]}}]
"#
    )
}

/// A script printing the HTTP status of a GET of `url`.
fn status_of(url: &str) -> String {
    format!("curl -s -m 5 -o /dev/null -w '%{{http_code}}' {url}")
}

/// A script printing how many of `n` requests to reviews `version` answered (over one
/// connection: Envoy routes each request on its own).
fn answered_by(version: &str, n: u32, seconds: u32) -> String {
    format!(
        "curl -s -m {seconds} 'http://reviews:9080/[1-{n}]' | grep -c version={version} || true"
    )
}

const STRICT: &str = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default}
spec: {mtls: {mode: STRICT}}
"#;

const DENY_ADMIN_PATH: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-deny}
spec:
  selector: {matchLabels: {app: reviews}}
  action: DENY
  rules: [{to: [{operation: {paths: [/denied]}}]}]
"#;

fn split(v1: u32, v2: u32) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews}}
spec:
  host: reviews
  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews}}
spec:
  hosts: [reviews]
  http:
  - route:
    - {{destination: {{host: reviews, subset: v1}}, weight: {v1}}}
    - {{destination: {{host: reviews, subset: v2}}, weight: {v2}}}
"#
    )
}

/// Everything the pod path must do, in a namespace of its own.
async fn scenario(cluster: &TestCluster, client: &kube::Client, cni_managed: bool) {
    let prefix = if cni_managed { "pods-cni" } else { "pods-init" };
    let (namespace, s) = InNamespace::create(cluster, prefix).await;
    s.inject();
    s.apply(&workloads());
    for deployment in ["client", "reviews-v1", "reviews-v2", "ledger"] {
        s.rolled_out(deployment);
    }
    let reviews = pods(client, &s.namespace, "app=reviews").await;
    for pod in &reviews {
        let spec = pod.spec.as_ref().unwrap();
        let init: Vec<_> = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        if cni_managed {
            assert!(
                !init.contains(&INIT_CONTAINER),
                "the CNI plugin redirects: {init:?}"
            );
        } else {
            assert!(init.contains(&INIT_CONTAINER), "{init:?}");
        }
        assert_eq!(spec.containers[0].name, PROXY_CONTAINER);
    }
    let target_ip = pod_ip(&reviews[0]);

    captured_with_mtls(&s).await;
    undeclared_port(&s, client, &target_ip).await;
    tcp_service(&s).await;
    workload_metrics(&s, client, &reviews).await;
    admin_is_private(&s, &reviews[0], &target_ip);
    split_and_deny(&s).await;
    replacement_pod(&s, &reviews).await;
    if !cni_managed {
        tcp_by_address_range(client, &s).await;
        through_a_gateway(cluster, &s).await;
        the_node_answers_pods_only_what_they_may_know(client, &s).await;
        tls_by_sni_name(client, &s).await;
        passthrough_to_the_address_dialled(&s).await;
    }
    namespace.delete().await.ok();
}

/// Captured: curl knows nothing of the mesh, its sidecar sends it with mTLS, and the
/// server's sidecar hands the app the caller's verified identity.
async fn captured_with_mtls(s: &InNamespace<'_>) {
    let body = s
        .until(
            "a request through both sidecars",
            "curl -s -m 5 http://reviews:9080/",
            |r| r.as_ref().is_ok_and(|b| b.contains("service=reviews")),
        )
        .await
        .unwrap();
    let caller = format!("spiffe://cluster.local/ns/{}/sa/client", s.namespace);
    assert!(
        body.contains("x-forwarded-client-cert") && body.contains(&caller),
        "the app sees the caller's identity: {body}"
    );
}

/// A port no Service declares passes through to the app: under STRICT, plaintext to it
/// is refused like any other, and 10,000 such connections leave Envoy up.
async fn undeclared_port(s: &InNamespace<'_>, client: &kube::Client, target_ip: &str) {
    // A port no Service declares passes through to the app (PERMISSIVE so far): from
    // 127.0.0.6, so capture does not send Envoy's own connection back to Envoy.
    // (The echo never closes the connection: curl ends on its time limit.)
    let echoed = s.in_client(&format!(
        "curl -s -m 3 --http0.9 http://{target_ip}:9090/passthrough || true"
    ));
    assert!(
        echoed
            .as_deref()
            .is_ok_and(|b| b.contains("GET /passthrough")),
        "the undeclared port echoes: {echoed:?}"
    );
    // A host the mesh does not know, on a port where it routes HTTP by host: passed on
    // to the address dialled (ALLOW_ANY, Istio's default), not answered 404.
    let passed = s.in_client(&format!(
        "curl -s -m 5 -H 'Host: not-in-the-mesh.example' http://{target_ip}:9080/"
    ));
    assert!(
        passed
            .as_deref()
            .is_ok_and(|b| b.contains("service=reviews")),
        "an unknown host passes through: {passed:?}"
    );

    // STRICT: plaintext to the undeclared port is refused like any other; 10,000 such
    // connections leave the server's Envoy up.
    s.apply(STRICT);
    s.until(
        "plaintext to an undeclared port refused under STRICT",
        &format!("curl -s -m 3 --http0.9 http://{target_ip}:9090/strict || true"),
        |r| r.as_ref().is_ok_and(|b| !b.contains("GET /strict")),
    )
    .await
    .unwrap();
    let connected = s
        .in_client(&format!(
            "n=0; for i in $(seq 10000); do exec 3<>/dev/tcp/{target_ip}/9090 && n=$((n+1)); exec 3>&-; done; echo $n"
        ))
        .unwrap();
    assert_eq!(
        connected.trim(),
        "10000",
        "each connection reached the client's sidecar"
    );
    let after = pods(client, &s.namespace, "app=reviews").await;
    let restarted = restarted(&after);
    assert!(
        restarted.is_empty(),
        "no container restarted (probes pass under STRICT, Envoy stayed up): {restarted:?}"
    );
    s.until(
        "mTLS still works",
        &status_of("http://reviews:9080/"),
        |r| r.as_deref() == Ok("200"),
    )
    .await
    .unwrap();
}

/// A TCP service: the client's sidecar knows the connection by the Service's address
/// and sends it with mTLS (plaintext would be refused under STRICT); the server's
/// network RBAC sees the client's identity.
async fn tcp_service(s: &InNamespace<'_>) {
    s.until("TCP to the ledger Service", LEDGER_ECHO, |r| {
        r.as_deref().map(str::trim) == Ok("tcp-through-the-mesh")
    })
    .await
    .unwrap();
    let client_identity = format!("cluster.local/ns/{}/sa/client", s.namespace);
    s.apply(&deny_ledger_to(&client_identity));
    s.until("the client's TCP denied by identity", LEDGER_ECHO, |r| {
        r.as_deref().is_ok_and(|b| b.trim().is_empty())
    })
    .await
    .unwrap();
    s.apply(&deny_ledger_to("cluster.local/ns/elsewhere/sa/nobody"));
    s.until(
        "another identity's DENY lets the client in",
        LEDGER_ECHO,
        |r| r.as_deref().map(str::trim) == Ok("tcp-through-the-mesh"),
    )
    .await
    .unwrap();
}

/// A ServiceEntry whose `addresses` is a range (CIDR): the client dials a ledger pod's own
/// address, which no virtual IP names, and its sidecar knows the connection by the range
/// and sends it to the entry's endpoint with mutual TLS. Before the entry, the same
/// connection passes through in plaintext, which the ledger's STRICT sidecar refuses.
async fn tcp_by_address_range(client: &kube::Client, s: &InNamespace<'_>) {
    let ledger_ip = pod_ip(&pods(client, &s.namespace, "app=ledger").await[0]);
    let echo = format!(
        "timeout 5 bash -c 'exec 3<>/dev/tcp/{ledger_ip}/7000; echo tcp-by-range >&3; head -n1 <&3' || true"
    );
    let before = s.in_client(&echo);
    // (The server's sidecar answers plaintext with a TLS alert, never with the echo.)
    assert!(
        before.as_deref().is_ok_and(|b| !b.contains("tcp-by-range")),
        "plaintext to the pod's address is refused under STRICT: {before:?}"
    );
    let (network, _) = ledger_ip.rsplit_once('.').unwrap();
    s.apply(&format!(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: ledgers}}
spec:
  hosts: [ledgers.internal]
  addresses: [{network}.0/24]
  ports: [{{number: 7000, name: tcp, protocol: TCP}}]
  resolution: STATIC
  endpoints:
  - {{address: {ledger_ip}, serviceAccount: ledger, labels: {{app: ledger, security.istio.io/tlsMode: istio}}}}
"#
    ));
    s.until("TCP into the range, to the entry's endpoint", &echo, |r| {
        r.as_deref().map(str::trim) == Ok("tcp-by-range")
    })
    .await
    .unwrap();
    s.kubectl(&["delete", "serviceentry", "ledgers"], None)
        .expect("the entry deleted");
}

/// Istio's workload metrics where Prometheus scrapes them (each pod's status port, as
/// its annotations say), from the requests and connections of the steps before: the
/// server's sidecar reports the client as their source, named by its Deployment and
/// proven by its certificate; the client's sidecar reports the TCP service it reached.
async fn workload_metrics(s: &InNamespace<'_>, client: &kube::Client, reviews: &[Pod]) {
    let ns = &s.namespace;
    let scrape = |ip: &str| format!("curl -s -m 5 http://{ip}:15020/stats/prometheus");
    let from_client = format!("source_principal=\"spiffe://cluster.local/ns/{ns}/sa/client\"");
    let has = |text: &str, name: &str, labels: &[&str]| {
        text.lines()
            .any(|l| l.starts_with(&format!("{name}{{")) && labels.iter().all(|w| l.contains(w)))
    };
    // Istio's series only (Envoy's own are thousands of lines).
    let istios = |text: String| -> String {
        text.lines()
            .filter(|l| l.starts_with("istio_"))
            .map(|l| format!("{l}\n"))
            .collect()
    };
    let http = [
        "reporter=\"destination\"",
        "source_workload=\"client\"",
        &from_client,
        "destination_workload=\"reviews-v",
        "destination_app=\"reviews\"",
        "response_code=\"200\"",
        "connection_security_policy=\"mutual_tls\"",
    ];
    // Either reviews pod may have served the request; the scrape is retried (one, right
    // after the 10,000 connections above, once came back empty).
    let every_pod = reviews
        .iter()
        .map(|pod| format!("{} | grep '^istio_' || true", scrape(&pod_ip(pod))))
        .collect::<Vec<_>>()
        .join("; ");
    s.until(
        "the server's sidecar to report the client's request",
        &every_pod,
        |r| {
            r.as_deref()
                .is_ok_and(|text| has(text, "istio_requests_total", &http))
        },
    )
    .await
    .unwrap();
    // The app asked to be scraped itself: Prometheus is sent to the agent, which serves
    // the app's own metrics with the proxy's.
    let reviews_v1 = &reviews[0];
    let annotations = reviews_v1.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations.get("prometheus.io/port").map(String::as_str),
        Some("15020"),
        "{annotations:?}"
    );
    let merged = s.in_client(&scrape(&pod_ip(reviews_v1))).unwrap();
    assert!(
        has(&merged, "sample_requests_total", &["service=\"reviews\""]),
        "the app's own metrics at the agent: {}",
        merged
            .lines()
            .filter(|l| l.starts_with("sample"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let ledger = pod_ip(&pods(client, ns, "app=ledger").await[0]);
    let received = istios(s.in_client(&scrape(&ledger)).unwrap());
    let tcp = [
        "reporter=\"destination\"",
        &from_client,
        "destination_workload=\"ledger\"",
        "connection_security_policy=\"mutual_tls\"",
    ];
    for name in [
        "istio_tcp_connections_closed_total",
        "istio_tcp_received_bytes_total",
    ] {
        assert!(has(&received, name, &tcp), "{name} {tcp:?} in\n{received}");
    }
    // Counted as the upstream connects, before the client's certificate is read.
    let opened = [tcp[0], tcp[2], tcp[3]];
    assert!(
        has(&received, "istio_tcp_connections_opened_total", &opened),
        "{opened:?} in\n{received}"
    );
    // The client's own, scraped from another pod as Prometheus would.
    let client_ip = pod_ip(&pods(client, ns, "app=client").await[0]);
    let sent = istios(s.run_in("ledger", &scrape(&client_ip)).unwrap());
    let service = format!("destination_service=\"ledger.{ns}.svc.cluster.local\"");
    let tcp = [
        "reporter=\"source\"",
        "source_workload=\"client\"",
        &service,
    ];
    assert!(
        has(&sent, "istio_tcp_sent_bytes_total", &tcp),
        "{tcp:?} in\n{sent}"
    );
}

/// Envoy's admin is nobody's but its own: not on the pod's address, from another pod.
fn admin_is_private(s: &InNamespace<'_>, server: &Pod, target_ip: &str) {
    let admin = s.in_client(&status_of(&format!("http://{target_ip}:15000/config_dump")));
    assert!(
        !admin.as_deref().is_ok_and(|code| code == "200"),
        "another pod reached Envoy's admin: {admin:?}"
    );
    let listening = s
        .kubectl(
            &[
                "exec",
                server.metadata.name.as_deref().unwrap(),
                "-c",
                "reviews",
                "--",
                "cat",
                "/proc/net/tcp",
                "/proc/net/tcp6",
            ],
            None,
        )
        .unwrap();
    let admin_port = format!(":{:04X} ", 15000);
    assert!(
        !listening
            .lines()
            .any(|l| l.contains(&admin_port) && l.split_whitespace().nth(3) == Some("0A")),
        "nothing listens on TCP 15000 in the pod:\n{listening}"
    );
}

/// 80/20 over 1,000 requests (one connection; Envoy routes each request), then an
/// AuthorizationPolicy DENY answers 403 for its path, and nothing else.
async fn split_and_deny(s: &InNamespace<'_>) {
    s.apply(&split(0, 100));
    s.until("all traffic on v2", &answered_by("v2", 20, 5), |r| {
        r.as_deref().map(str::trim) == Ok("20")
    })
    .await
    .unwrap();
    s.apply(&split(80, 20));
    s.until("the 80/20 split in force", &answered_by("v1", 20, 5), |r| {
        r.as_deref().is_ok_and(|n| n.trim() != "0")
    })
    .await
    .unwrap();
    let v2 = s.in_client(&answered_by("v2", 1000, 60)).unwrap();
    let v2: f64 = v2.trim().parse().unwrap();
    let sigma = (1000.0_f64 * 0.2 * 0.8).sqrt();
    assert!(
        (v2 - 200.0).abs() <= 4.0 * sigma,
        "{v2} of 1000 went to v2, expected 200 ± {:.0}",
        4.0 * sigma
    );

    s.apply(DENY_ADMIN_PATH);
    s.until(
        "the DENY policy in force",
        &status_of("http://reviews:9080/denied"),
        |r| r.as_deref() == Ok("403"),
    )
    .await
    .unwrap();
    let allowed = s
        .in_client(&status_of("http://reviews:9080/allowed"))
        .unwrap();
    assert_eq!(allowed, "200");
}

/// PASSTHROUGH balancing: the client's sidecar sends each request to the address the
/// client dialled (the Service's cluster IP, which kube-proxy spreads over every reviews
/// pod), with mutual TLS (STRICT is in force), instead of choosing among the subset's
/// endpoints: a route all to v1 is answered by v2 too. (One request per connection, or
/// kube-proxy would keep the first pod it picked.)
async fn passthrough_to_the_address_dialled(s: &InNamespace<'_>) {
    s.apply(&split(100, 0).replace(
        "  host: reviews\n",
        "  host: reviews\n  trafficPolicy: {loadBalancer: {simple: PASSTHROUGH}, connectionPool: {http: {maxRequestsPerConnection: 1}}}\n",
    ));
    let twenty = "for i in $(seq 20); do curl -s -m 5 http://reviews:9080/; echo; done";
    s.until("all 20 answered, by v2 too", twenty, |r| {
        r.as_ref()
            .is_ok_and(|b| b.contains("version=v2") && b.matches("service=reviews").count() == 20)
    })
    .await
    .unwrap();
}

/// A deleted pod's replacement gets its config and certificate, and probes pass for it
/// under STRICT.
async fn replacement_pod(s: &InNamespace<'_>, reviews: &[Pod]) {
    let old = reviews
        .iter()
        .find(|p| p.metadata.labels.as_ref().unwrap()["version"] == "v1")
        .unwrap();
    s.kubectl(
        &[
            "delete",
            "pod",
            old.metadata.name.as_deref().unwrap(),
            "--wait=false",
        ],
        None,
    )
    .unwrap();
    s.rolled_out("reviews-v1");
    s.until("v1 answering again", &answered_by("v1", 20, 5), |r| {
        r.as_deref().is_ok_and(|n| n.trim() != "0")
    })
    .await
    .unwrap();
}

/// The install guide's gateway (its own namespace, `image: auto`) receives a request
/// from outside the mesh through its Service and routes it, with mTLS, to `reviews`.
async fn through_a_gateway(cluster: &TestCluster, s: &InNamespace<'_>) {
    let (namespace, g) = InNamespace::create(cluster, "gateways").await;
    g.inject();
    g.apply(
        &fleetmesh_cli::install::samples::gateway("asm-managed")
            .replace("GATEWAY_NAMESPACE", &g.namespace),
    );
    g.apply(&shop_through_gateway(&format!(
        "host: reviews.{}.svc.cluster.local, subset: v2",
        s.namespace
    )));
    g.apply(&format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: outside}}
spec:
  selector: {{matchLabels: {{app: outside}}}}
  template:
    metadata: {{labels: {{app: outside, sidecar.istio.io/inject: "false"}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers: [{{name: outside, image: {sample}, command: [sleep, infinity]}}]
"#,
        sample = sample_image(),
    ));
    g.rolled_out("istio-ingressgateway");
    g.rolled_out("outside");
    let url = format!("http://istio-ingressgateway.{}:80/", g.namespace);
    let body = g
        .until_in(
            "outside",
            "the gateway routing shop.example.com",
            &format!("curl -s -m 5 -H 'Host: shop.example.com' {url}"),
            |r| r.as_ref().is_ok_and(|b| b.contains("version=v2")),
        )
        .await
        .unwrap();
    let gateway_identity = format!("spiffe://cluster.local/ns/{}/sa/default", g.namespace);
    assert!(
        body.contains(&gateway_identity),
        "reviews saw the gateway's identity over mTLS: {body}"
    );
    namespace.delete().await.ok();
}

/// The node's own ports a pod can reach: the kubelet refuses an anonymous request (no
/// pod listing, no exec), and the API server behind the node's forwarder gives an
/// anonymous caller nothing, as it does on loopback.
async fn the_node_answers_pods_only_what_they_may_know(client: &kube::Client, s: &InNamespace<'_>) {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = nodes
        .list(&ListParams::default().labels("fleetmesh.dev/node=real"))
        .await
        .unwrap()
        .items
        .into_iter()
        .next()
        .expect("the real node");
    let kubelet = node
        .status
        .and_then(|s| s.daemon_endpoints)
        .and_then(|d| d.kubelet_endpoint)
        .map(|e| e.port)
        .expect("the kubelet's port");
    let pods = s
        .in_client(&format!(
            "curl -sk -m 5 -o /dev/null -w '%{{http_code}}' https://{NODE_IP}:{kubelet}/pods"
        ))
        .unwrap();
    assert_eq!(pods, "401", "the kubelet refuses a pod's anonymous request");
    let api = s
        .in_client("curl -sk -m 5 -o /dev/null -w '%{http_code}' https://kubernetes.default/api/v1/secrets")
        .unwrap();
    assert_eq!(api, "403", "the API server gives an anonymous pod nothing");
}

/// A TLS server outside the mesh (no sidecar): one `openssl s_server` per certificate,
/// `secure.example` on 8443 and `alt.example` on 8444; its status page (`-www`) repeats
/// its command line, so the answer names the certificate file of the server reached.
const TLS_SERVERS: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: secure}
spec:
  selector: {matchLabels: {app: secure}}
  template:
    metadata: {labels: {app: secure, sidecar.istio.io/inject: "false"}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: secure
        image: SAMPLE_IMAGE
        command: [bash, -c]
        args:
        - |
          for name in secure alt; do
            openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
              -subj "/CN=$name.example" -keyout /tmp/$name.key -out /tmp/$name.pem 2>/dev/null
          done
          openssl s_server -quiet -accept 8443 -cert /tmp/secure.pem -key /tmp/secure.key -www &
          exec openssl s_server -quiet -accept 8444 -cert /tmp/alt.pem -key /tmp/alt.key -www
        readinessProbe: {tcpSocket: {port: 8444}, periodSeconds: 1}
"#;

/// Both servers as TLS ServiceEntries without addresses on port 443, reached on their
/// own ports (`targetPort`), so nothing answers on the address's port 443 itself.
fn tls_service_entries(server_ip: &str) -> String {
    ["secure:8443", "alt:8444"]
        .iter()
        .map(|entry| {
            let (name, target) = entry.split_once(':').unwrap();
            format!(
                r#"---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}}}
spec:
  hosts: [{name}.example]
  location: MESH_EXTERNAL
  ports: [{{number: 443, name: tls, protocol: TLS, targetPort: {target}}}]
  resolution: STATIC
  endpoints: [{{address: {server_ip}}}]
"#
            )
        })
        .collect()
}

/// TLS to a destination without a virtual IP (an HTTPS ServiceEntry, as for any outside
/// API) is told apart by its SNI name: the client dials the server's address on 443,
/// where nothing listens, and its sidecar sends the connection by name to the entry's
/// endpoint, under REGISTRY_ONLY too (passing it through would be refused); a mesh
/// VirtualService's `tls` route then sends the name elsewhere.
async fn tls_by_sni_name(client: &kube::Client, s: &InNamespace<'_>) {
    s.apply(&TLS_SERVERS.replace("SAMPLE_IMAGE", &sample_image()));
    s.rolled_out("secure");
    let server_ip = pod_ip(&pods(client, &s.namespace, "app=secure").await[0]);
    s.apply(&tls_service_entries(&server_ip));
    s.apply(
        r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default}
spec:
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
"#,
    );
    let fetch =
        format!("curl -sk -m 5 --resolve secure.example:443:{server_ip} https://secure.example/");
    s.until("TLS by SNI name to the entry's endpoint", &fetch, |r| {
        r.as_ref().is_ok_and(|b| b.contains("/tmp/secure.pem"))
    })
    .await
    .unwrap();
    let direct = s.in_client(&format!(
        "curl -sk -m 5 https://{server_ip}:8443/ || echo refused"
    ));
    assert!(
        direct.as_deref().is_ok_and(|b| !b.contains("s_server")),
        "REGISTRY_ONLY lets an address the mesh does not know through: {direct:?}"
    );
    s.apply(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: secure-moved}
spec:
  hosts: [secure.example]
  tls:
  - match: [{port: 443, sniHosts: [secure.example]}]
    route: [{destination: {host: alt.example, port: {number: 443}}}]
"#,
    );
    s.until("the tls route sends the name elsewhere", &fetch, |r| {
        r.as_ref().is_ok_and(|b| b.contains("/tmp/alt.pem"))
    })
    .await
    .unwrap();
}

/// What a real node may change on this machine while it runs and must put back when it
/// stops: interfaces, network namespaces, routes, iptables chains and rules (both
/// families, counters aside), mounts, the CNI directories, and the sysctls it sets.
fn machine_state() -> String {
    let script = r#"
        ip -o link | awk '{print $2}'
        ip netns list
        ip route show table all
        for save in iptables-save ip6tables-save; do
          $save | grep -E '^(-A|:[A-Z0-9-]+ -)' | sed 's/ \[[0-9:]*\]$//'
        done
        awk '{print $1, $2, $3}' /proc/mounts
        ls -a /etc/cni /opt/cni 2>&1
        for s in vm/overcommit_memory vm/panic_on_oom kernel/panic kernel/panic_on_oops                  kernel/keys/root_maxkeys kernel/keys/root_maxbytes net/ipv4/ip_forward; do
          echo "$s=$(cat /proc/sys/$s)"
        done
    "#;
    let output = std::process::Command::new("bash")
        .args(["-c", script])
        .output()
        .expect("bash runs");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The real node is one: its tests take turns.
static NODE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_fetch_their_routes_on_demand() {
    let _node = NODE.lock().await;
    let cluster = start_cluster();
    let client = cluster.client().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let meshd = start_meshd_with(&cluster, dir.path(), |c| c.on_demand_routes = true).await;
    install(&cluster, &meshd, false).await;
    scenario(&cluster, &client, false).await;
    let metrics = meshd.metrics();
    assert!(
        metrics.pushes_of("vhds") > 0,
        "the pods' sidecars fetched virtual hosts"
    );
    assert_eq!(metrics.rejects_total(), 0, "a proxy rejected config");
    meshd.shutdown().await;
    cluster.stop().expect("the node stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_talk_strict_mtls_through_istio_init_then_through_the_cni_plugin() {
    let _node = NODE.lock().await;
    // A node left by an earlier run is stopped first, so the state below is the machine's.
    TestCluster::stop_named(CLUSTER).expect("a stale cluster stops");
    let before = machine_state();
    let cluster = start_cluster();
    let client = cluster.client().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let meshd = start_meshd(&cluster, dir.path()).await;

    install(&cluster, &meshd, false).await;
    scenario(&cluster, &client, false).await;

    install(&cluster, &meshd, true).await;
    cluster
        .run_kubectl(
            &[
                "-n",
                "kube-system",
                "rollout",
                "status",
                "daemonset/istio-cni-node",
                "--timeout=120s",
            ],
            None,
        )
        .expect("the CNI DaemonSet runs");
    scenario(&cluster, &client, true).await;

    meshd.shutdown().await;
    cluster.stop().expect("the node stops");
    let after = machine_state();
    assert!(
        before == after,
        "stopping the node left the machine changed:\n--- before\n{before}\n--- after\n{after}"
    );
}
