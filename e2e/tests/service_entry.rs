//! ServiceEntries: hosts outside the Service registry, with STATIC endpoints or resolved
//! by Envoy through DNS, routed like any service.

use fleetmesh_e2e::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_entries_static_and_dns() {
    let store = Bookstore::start(XdsMode::Delta).await;
    let ratings_app = store.ratings.app.as_ref().unwrap().address().port();
    let entries = format!(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: static-api}}
spec:
  hosts: [api.example.com]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  location: MESH_INTERNAL
  endpoints: [{{address: "{ip}", ports: {{http: 9080}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: dns-api}}
spec:
  hosts: [direct.example.com]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: DNS
  endpoints: [{{address: 127.0.0.1, ports: {{http: {ratings_app}}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: static-api}}
spec:
  hosts: [api.example.com]
  http:
  - match: [{{uri: {{prefix: /teapot}}}}]
    fault: {{abort: {{httpStatus: 418, percentage: {{value: 100}}}}}}
    route: [{{destination: {{host: api.example.com}}}}]
  - route: [{{destination: {{host: api.example.com}}}}]
"#,
        ip = store.ratings.ip
    );
    store
        .apply("entries.yaml", &entries, "http://api.example.com/", 200)
        .await;
    // STATIC: the endpoint is the ratings sidecar; port 80 maps to its 9080.
    let (status, _, body) = get(&store.frontend, "http://api.example.com/books")
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(body.starts_with("service=ratings"), "{body}");
    assert_eq!(
        get(&store.frontend, "http://api.example.com/teapot")
            .await
            .unwrap()
            .0,
        418,
        "its VirtualService applies"
    );
    // DNS: a STRICT_DNS cluster Envoy resolves itself (to the ratings app, past its sidecar;
    // the sandbox has no DNS server, so the endpoint is an address literal).
    let url = "http://direct.example.com/direct";
    wait_for_status(&store.frontend, url, 200).await;
    let (_, _, body) = get(&store.frontend, url).await.unwrap();
    assert!(
        body.starts_with("service=ratings") && body.contains("path=/direct"),
        "{body}"
    );
    assert_eq!(nacks(&store.mesh), 0);
}

/// A Kubernetes Service without selector, its endpoints listed by an Endpoints object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_without_selector_use_their_endpoints_object() {
    let store = Bookstore::start(XdsMode::Sotw).await;
    let legacy = format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: legacy}}
spec: {{ports: [{{name: http, port: 80, targetPort: 9080}}]}}
---
apiVersion: v1
kind: Endpoints
metadata: {{name: legacy}}
subsets:
- addresses: [{{ip: "{ip}"}}]
  ports: [{{name: http, port: 9080}}]
"#,
        ip = store.ratings.ip
    );
    store
        .apply("legacy.yaml", &legacy, "http://legacy/", 200)
        .await;
    let (status, _, body) = get(&store.frontend, "http://legacy/books").await.unwrap();
    assert_eq!(status, 200);
    assert!(
        body.starts_with("service=ratings"),
        "served by the listed endpoint: {body}"
    );
    assert_eq!(nacks(&store.mesh), 0);
}
