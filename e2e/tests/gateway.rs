//! A gateway Envoy (router mode) serves a Gateway and its bound VirtualService.

use fleetmesh_e2e::*;
use std::time::Duration;

const GATEWAY: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: shop-gateway}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: [shop.example.com]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop}
spec:
  hosts: [shop.example.com]
  gateways: [shop-gateway]
  http:
  - match: [{uri: {prefix: /reviews}}]
    route: [{destination: {host: reviews, subset: v1}}]
  - route: [{destination: {host: ratings}}]
"#;

async fn through_gateway(gateway: &Workload, host: &str, path: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .get(format!("http://{}:8080{path}", gateway.ip))
        .header("host", host)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("the gateway answers");
    let status = response.status().as_u16();
    let service = response
        .headers()
        .get(SERVICE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let version = response
        .headers()
        .get(VERSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (status, format!("{service} {version}").trim().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_serves_bound_virtual_service() {
    let store = Bookstore::start(XdsMode::Delta).await;
    store.mesh.write("gateway.yaml", GATEWAY).unwrap();
    let gateway = store
        .mesh
        .add_gateway("ingressgateway", "default", &[("istio", "ingressgateway")])
        .await
        .expect("gateway starts");
    eventually(
        "the gateway to route shop.example.com",
        Duration::from_secs(30),
        async || {
            (through_gateway(&gateway, "shop.example.com", "/reviews/1")
                .await
                .0
                == 200)
                .then_some(())
        },
    )
    .await;
    for _ in 0..10 {
        assert_eq!(
            through_gateway(&gateway, "shop.example.com", "/reviews/1").await,
            (200, "reviews v1".to_string())
        );
        assert_eq!(
            through_gateway(&gateway, "shop.example.com:8080", "/").await,
            (200, "ratings v1".to_string())
        );
    }
    // A host no server accepts.
    assert_eq!(
        through_gateway(&gateway, "other.example.com", "/").await.0,
        404
    );
    // Sidecars do not get gateway-bound routes.
    assert_eq!(
        get(&store.frontend, "http://shop.example.com/reviews")
            .await
            .unwrap()
            .0,
        404
    );
    assert_eq!(nacks(&store.mesh), 0);
}
