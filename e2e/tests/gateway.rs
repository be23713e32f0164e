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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_gateway_terminates_tls_simple_and_mutual() {
    let pki = Pki::generate();
    let store = Bookstore::start(XdsMode::Delta).await;
    let gateway_yaml = format!(
        r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: secure-gateway}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 8443, name: https, protocol: HTTPS}}
    hosts: [shop.example.com]
    tls: {{mode: SIMPLE, serverCertificate: {crt}, privateKey: {key}}}
  - port: {{number: 9443, name: https-mtls, protocol: HTTPS}}
    hosts: [shop.example.com]
    tls: {{mode: MUTUAL, serverCertificate: {crt}, privateKey: {key}, caCertificates: {ca}}}
  - port: {{number: 8081, name: http-redirect, protocol: HTTP}}
    hosts: [shop.example.com]
    tls: {{httpsRedirect: true}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: shop}}
spec:
  hosts: [shop.example.com]
  gateways: [secure-gateway]
  http: [{{route: [{{destination: {{host: ratings}}}}]}}]
"#,
        crt = pki.path("tls.crt"),
        key = pki.path("tls.key"),
        ca = pki.path("ca.crt"),
    );
    store
        .mesh
        .write("secure-gateway.yaml", &gateway_yaml)
        .unwrap();
    assert_eq!(store.mesh.meshd().config_errors(), Vec::<String>::new());
    let gateway = store
        .mesh
        .add_gateway("ingressgateway", "default", &[("istio", "ingressgateway")])
        .await
        .expect("gateway starts");
    let simple = pki.client(gateway.address(8443), false);
    eventually(
        "HTTPS through the gateway",
        Duration::from_secs(30),
        async || {
            let response = simple
                .get("https://shop.example.com:8443/")
                .send()
                .await
                .ok()?;
            (response.status() == 200).then_some(())
        },
    )
    .await;
    let response = simple
        .get("https://shop.example.com:8443/")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()[SERVICE_HEADER], "ratings");

    // MUTUAL: without a client certificate the handshake fails; with one it works.
    let anonymous = pki.client(gateway.address(9443), false);
    assert!(
        anonymous
            .get("https://shop.example.com:9443/")
            .send()
            .await
            .is_err()
    );
    let identified = pki.client(gateway.address(9443), true);
    let response = identified
        .get("https://shop.example.com:9443/")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(nacks(&store.mesh), 0);
}
