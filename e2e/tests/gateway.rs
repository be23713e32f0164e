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

/// Certificates for the HTTPS test: a CA, the gateway's certificate for
/// shop.example.com, and a client certificate, all from the same CA.
struct Pki {
    dir: tempfile::TempDir,
    ca: rcgen::Certificate,
    client: (String, String),
}

impl Pki {
    fn new() -> Pki {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        // Distinct names: a leaf named like its issuer would look self-signed.
        ca_params.distinguished_name = rcgen::DistinguishedName::new();
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "fleetmesh test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf = |name: &str| {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
            params.distinguished_name = rcgen::DistinguishedName::new();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            let cert = params.signed_by(&key, &issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let dir = tempfile::tempdir().unwrap();
        let (server_cert, server_key) = leaf("shop.example.com");
        std::fs::write(dir.path().join("tls.crt"), server_cert).unwrap();
        std::fs::write(dir.path().join("tls.key"), server_key).unwrap();
        std::fs::write(dir.path().join("ca.crt"), ca.pem()).unwrap();
        Pki {
            dir,
            ca,
            client: leaf("client.example.com"),
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// A client that trusts the CA and reaches shop.example.com at `address`.
    fn client(&self, address: std::net::SocketAddr, with_certificate: bool) -> reqwest::Client {
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(self.ca.pem().as_bytes()).unwrap())
            .resolve("shop.example.com", address)
            .timeout(Duration::from_secs(10));
        if with_certificate {
            let pem = format!("{}{}", self.client.0, self.client.1);
            builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
        }
        builder.build().unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_gateway_terminates_tls_simple_and_mutual() {
    let pki = Pki::new();
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
