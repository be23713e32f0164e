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

/// Writes `yaml` to the mesh's config (it must be valid) and starts the ingress gateway
/// its Gateways select.
async fn ingress_gateway(store: &Bookstore, file: &str, yaml: &str) -> Workload {
    store.mesh.write(file, yaml).unwrap();
    assert_eq!(store.mesh.meshd().config_errors(), Vec::<String>::new());
    store
        .mesh
        .add_gateway("ingressgateway", "default", &[("istio", "ingressgateway")])
        .await
        .expect("gateway starts")
}

/// A GET of `path` on the gateway's plain HTTP port 8080, for `host`.
fn gateway_get(gateway: &Workload, host: &str, path: &str) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .get(format!("http://{}:8080{path}", gateway.ip))
        .header("host", host)
        .timeout(Duration::from_secs(10))
}

async fn through_gateway(gateway: &Workload, host: &str, path: &str) -> (u16, String) {
    let response = gateway_get(gateway, host, path)
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

/// Waits until `client` gets a 200 from `url` (the gateway's listener may still warm).
async fn https_answers(what: &str, client: &reqwest::Client, url: &str) {
    eventually(what, Duration::from_secs(30), async || {
        let response = client.get(url).send().await.ok()?;
        (response.status() == 200).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_serves_bound_virtual_service() {
    let store = Bookstore::start(XdsMode::Delta).await;
    let gateway = ingress_gateway(&store, "gateway.yaml", GATEWAY).await;
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

/// A gateway no Gateway selects yet has no listener to be sent; it is ready all the same
/// (Envoy waits for a first answer of every kind, however empty, before it calls itself
/// ready), and serves once a Gateway selects it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_with_nothing_to_serve_yet_is_ready() {
    let store = Bookstore::start(XdsMode::Delta).await;
    let gateway = store
        .mesh
        .add_gateway("ingressgateway", "default", &[("istio", "ingressgateway")])
        .await
        .expect("the gateway becomes ready without a listener");
    store.mesh.write("gateway.yaml", GATEWAY).unwrap();
    eventually(
        "the gateway to route shop.example.com",
        Duration::from_secs(30),
        async || {
            let answer = gateway_get(&gateway, "shop.example.com", "/reviews/1")
                .send()
                .await
                .ok()?;
            (answer.status() == 200).then_some(())
        },
    )
    .await;
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
    tls: {{mode: SIMPLE, serverCertificate: {crt}, privateKey: {key}, minProtocolVersion: TLSV1_3}}
  - port: {{number: 10443, name: https-tls12, protocol: HTTPS}}
    hosts: [shop.example.com]
    tls:
      mode: SIMPLE
      serverCertificate: {crt}
      privateKey: {key}
      maxProtocolVersion: TLSV1_2
      cipherSuites: ["[ECDHE-ECDSA-AES256-GCM-SHA384|ECDHE-ECDSA-CHACHA20-POLY1305]"]
  - port: {{number: 9443, name: https-mtls, protocol: HTTPS}}
    hosts: [shop.example.com]
    tls: {{mode: MUTUAL, serverCertificate: {crt}, privateKey: {key}, caCertificates: {ca}, subjectAltNames: [client.example.com]}}
  - port: {{number: 11443, name: https-mtls-other, protocol: HTTPS}}
    hosts: [shop.example.com]
    tls: {{mode: MUTUAL, serverCertificate: {crt}, privateKey: {key}, caCertificates: {ca}, subjectAltNames: [someone-else.example.com]}}
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
    let gateway = ingress_gateway(&store, "secure-gateway.yaml", &gateway_yaml).await;
    let simple = pki.client(gateway.address(8443), false);
    https_answers(
        "HTTPS through the gateway",
        &simple,
        "https://shop.example.com:8443/",
    )
    .await;
    let response = simple
        .get("https://shop.example.com:8443/")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()[SERVICE_HEADER], "ratings");
    protocol_bounds_hold(&pki, &gateway).await;
    // A MUTUAL server that names other clients refuses this one's certificate.
    let identified = pki.client(gateway.address(11443), true);
    assert!(
        identified
            .get("https://shop.example.com:11443/")
            .send()
            .await
            .is_err(),
        "a client certificate without the server's subjectAltNames"
    );

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

/// The bounds the secure gateway's servers set: 8443 takes TLS 1.3 only; 10443 speaks up
/// to TLS 1.2 with the cipher suites it names (the test's certificate is ECDSA).
async fn protocol_bounds_hold(pki: &Pki, gateway: &Workload) {
    let tls12 = pki.tls12_client(gateway.address(8443));
    assert!(
        tls12
            .get("https://shop.example.com:8443/")
            .send()
            .await
            .is_err(),
        "TLS 1.2 to a TLS 1.3-only server"
    );
    let tls12 = pki.tls12_client(gateway.address(10443));
    let response = tls12
        .get("https://shop.example.com:10443/")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let handshake = |version: &str| {
        std::process::Command::new("openssl")
            .args([
                "s_client",
                "-servername",
                "shop.example.com",
                version,
                "-connect",
            ])
            .arg(gateway.address(10443).to_string())
            .stdin(std::process::Stdio::null())
            .output()
            .expect("openssl runs")
            .status
            .success()
    };
    assert!(handshake("-tls1_2"), "TLS 1.2 to 10443");
    assert!(
        !handshake("-tls1_3"),
        "TLS 1.3 to a server capped at TLS 1.2"
    );
}

/// A Gateway may name certificate files before they are mounted in the gateway (Istio's
/// agent serves them when they appear): Envoy gets the listener without rejecting it,
/// the port's other server works meanwhile, and HTTPS works once the files are there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_certificate_files_are_served_once_mounted() {
    let pki = Pki::generate();
    let mounted = tempfile::tempdir().unwrap();
    let at = |name: &str| mounted.path().join(name).display().to_string();
    let store = Bookstore::start(XdsMode::Sotw).await;
    let gateway_yaml = format!(
        r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: later-gateway}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 8443, name: https, protocol: HTTPS}}
    hosts: [shop.example.com]
    tls: {{mode: SIMPLE, serverCertificate: {crt}, privateKey: {key}}}
  - port: {{number: 8080, name: http, protocol: HTTP}}
    hosts: [shop.example.com]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: shop}}
spec:
  hosts: [shop.example.com]
  gateways: [later-gateway]
  http: [{{route: [{{destination: {{host: ratings}}}}]}}]
"#,
        crt = at("tls.crt"),
        key = at("tls.key"),
    );
    let gateway = ingress_gateway(&store, "later-gateway.yaml", &gateway_yaml).await;
    assert_eq!(
        through_gateway(&gateway, "shop.example.com", "/").await.0,
        200
    );
    let https = pki.client(gateway.address(8443), false);
    assert!(
        https
            .get("https://shop.example.com:8443/")
            .send()
            .await
            .is_err(),
        "no certificate yet, no handshake"
    );
    assert_eq!(nacks(&store.mesh), 0);

    for name in ["tls.crt", "tls.key"] {
        std::fs::copy(pki.path(name), at(name)).unwrap();
    }
    https_answers(
        "HTTPS once the files are mounted",
        &https,
        "https://shop.example.com:8443/",
    )
    .await;
    assert_eq!(nacks(&store.mesh), 0);
}

/// MUTUAL with `caCrl`: a client certificate the revocation list names is refused, and a
/// list replaced on the gateway's host takes effect without a config change (its agent
/// reads the files again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_client_certificates_are_refused() {
    let pki = Pki::generate();
    let crl = tempfile::tempdir().unwrap();
    let crl = crl.path().join("ca.crl");
    pki.write_crl(&crl, false);
    let store = Bookstore::start(XdsMode::Delta).await;
    let gateway_yaml = format!(
        r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: mutual-gateway}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 8443, name: https, protocol: HTTPS}}
    hosts: [shop.example.com]
    tls: {{mode: MUTUAL, serverCertificate: {crt}, privateKey: {key}, caCertificates: {ca}, caCrl: {crl}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: shop}}
spec:
  hosts: [shop.example.com]
  gateways: [mutual-gateway]
  http: [{{route: [{{destination: {{host: ratings}}}}]}}]
"#,
        crt = pki.path("tls.crt"),
        key = pki.path("tls.key"),
        ca = pki.path("ca.crt"),
        crl = crl.display(),
    );
    let gateway = ingress_gateway(&store, "mutual-gateway.yaml", &gateway_yaml).await;
    let client = pki.client(gateway.address(8443), true);
    let url = "https://shop.example.com:8443/";
    https_answers("the client's certificate accepted", &client, url).await;

    pki.write_crl(&crl, true);
    eventually(
        "the revoked client certificate refused",
        Duration::from_secs(30),
        async || {
            // A new client each time: no connection from before the list changed.
            let client = pki.client(gateway.address(8443), true);
            client.get(url).send().await.is_err().then_some(())
        },
    )
    .await;
    assert_eq!(nacks(&store.mesh), 0);
}

/// PASSTHROUGH: the gateway holds no certificate; it forwards the client's TLS, chosen by
/// SNI, to a backend that terminates it with its own (the client verifies that one). A
/// name the server accepts but no route claims gets no connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_passthrough_by_sni() {
    let pki = Pki::generate();
    let backend = tls_backend(&pki, false).await;
    let store = Bookstore::start(XdsMode::Delta).await;
    let config = format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: shop-backend}}
spec:
  hosts: [shop-backend.internal]
  ports: [{{number: 443, name: tls, protocol: TLS}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{tls: {port}}}}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: passthrough-gateway}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 8443, name: tls, protocol: TLS}}
    hosts: [shop.example.com, other.example.com]
    tls: {{mode: PASSTHROUGH}}
  - port: {{number: 8080, name: http, protocol: HTTP}}
    hosts: [shop.example.com]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: shop-passthrough}}
spec:
  hosts: [shop.example.com]
  gateways: [passthrough-gateway]
  tls:
  - match: [{{sniHosts: [shop.example.com]}}]
    route: [{{destination: {{host: shop-backend.internal, port: {{number: 443}}}}}}]
  http: [{{route: [{{destination: {{host: ratings}}}}]}}]
"#,
        port = backend.port()
    );
    let gateway = ingress_gateway(&store, "passthrough.yaml", &config).await;
    let client = pki.client(gateway.address(8443), false);
    let body = eventually(
        "TLS through the gateway to the backend",
        Duration::from_secs(30),
        async || {
            let response = client
                .get("https://shop.example.com:8443/")
                .send()
                .await
                .ok()?;
            response.text().await.ok()
        },
    )
    .await;
    assert_eq!(body, BACKEND_ANSWER);
    // The same gateway still routes plain HTTP on its other port.
    assert_eq!(
        through_gateway(&gateway, "shop.example.com", "/").await,
        (200, "ratings v1".to_string())
    );

    // other.example.com: the server takes it, no tls route does.
    let unclaimed = reqwest::Client::builder()
        .no_proxy()
        .use_rustls_tls()
        .danger_accept_invalid_certs(true)
        .resolve("other.example.com", gateway.address(8443))
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    assert!(
        unclaimed
            .get("https://other.example.com:8443/")
            .send()
            .await
            .is_err()
    );
    assert_eq!(nacks(&store.mesh), 0);
}

/// A gateway is a workload too: RequestAuthentication and AuthorizationPolicies that
/// select it hold at the edge (a token required, a path denied), and only there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_selecting_the_gateway_hold_at_the_edge() {
    let issuer = JwtIssuer::generate();
    let store = Bookstore::start(XdsMode::Sotw).await;
    let policies = format!(
        r#"apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: edge-jwt}}
spec:
  selector: {{matchLabels: {{istio: ingressgateway}}}}
  jwtRules: [{{issuer: "{ISSUER}", jwks: '{jwks}'}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: edge-require-jwt}}
spec:
  selector: {{matchLabels: {{istio: ingressgateway}}}}
  rules: [{{from: [{{source: {{requestPrincipals: ["*"]}}}}]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: edge-deny}}
spec:
  selector: {{matchLabels: {{istio: ingressgateway}}}}
  action: DENY
  rules: [{{to: [{{operation: {{paths: ["/reviews/internal*"]}}}}]}}]
"#,
        jwks = issuer.jwks()
    );
    let gateway =
        ingress_gateway(&store, "gateway.yaml", &format!("{GATEWAY}---\n{policies}")).await;
    let status = async |path: &str, token: Option<&str>| {
        let mut request = gateway_get(&gateway, "shop.example.com", path);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    let token = issuer.token("alice", &["users"]);
    eventually(
        "the gateway to admit a valid token",
        Duration::from_secs(30),
        async || (status("/reviews/1", Some(&token)).await == 200).then_some(()),
    )
    .await;
    assert_eq!(status("/reviews/1", None).await, 403, "no token");
    let stranger = JwtIssuer::generate().token("alice", &["users"]);
    assert_eq!(
        status("/reviews/1", Some(&stranger)).await,
        401,
        "a forged token"
    );
    assert_eq!(
        status("/reviews/internal/stats", Some(&token)).await,
        403,
        "a denied path, even with a token"
    );
    // The sidecars behind the gateway are not selected: reviews answers without a token.
    let (code, _, _) = get(&store.frontend, "http://reviews:9080/").await.unwrap();
    assert_eq!(code, 200);
    assert_eq!(nacks(&store.mesh), 0);
}

/// A TCP server: connections are forwarded as they are to the destination of the bound
/// VirtualService's `tcp` route (here an echo server on loopback).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_servers_forward_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_port = echo.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut reader, mut writer) = socket.split();
                let _ = tokio::io::copy(&mut reader, &mut writer).await;
            });
        }
    });
    let store = Bookstore::start(XdsMode::Sotw).await;
    let config = format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: echo}}
spec:
  hosts: [echo.internal]
  ports: [{{number: 7000, name: tcp, protocol: TCP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{tcp: {echo_port}}}}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: tcp-gateway}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 9000, name: tcp, protocol: TCP}}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: echo}}
spec:
  hosts: ["*"]
  gateways: [tcp-gateway]
  tcp:
  - match: [{{port: 9000}}]
    route: [{{destination: {{host: echo.internal, port: {{number: 7000}}}}}}]
"#
    );
    let gateway = ingress_gateway(&store, "tcp.yaml", &config).await;
    let echoed = eventually(
        "the gateway to forward TCP",
        Duration::from_secs(30),
        async || {
            let mut stream = tokio::net::TcpStream::connect(gateway.address(9000))
                .await
                .ok()?;
            stream.write_all(b"ping over tcp").await.ok()?;
            let mut answer = [0u8; 13];
            tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut answer))
                .await
                .ok()?
                .ok()?;
            Some(answer)
        },
    )
    .await;
    assert_eq!(&echoed, b"ping over tcp");
    assert_eq!(nacks(&store.mesh), 0);
}
