//! TLS a sidecar originates to a destination outside the mesh (DestinationRule SIMPLE and
//! MUTUAL), with real Envoy: the app sends plain HTTP, the sidecar speaks TLS to a
//! backend on loopback that asks for a client certificate. The server's certificate is
//! checked (its CA, its name) and the client certificate files are presented; each
//! setting that should fail does.

use fleetmesh_e2e::*;
use std::time::Duration;

/// The backend as a ServiceEntry (plain HTTP for the app on port 80) naming the
/// certificate names its server proves, and how the sidecar speaks TLS to it.
fn config(backend: std::net::SocketAddr, names: &str, tls: &str) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: shop}}
spec:
  hosts: [shop.example.com]
  ports: [{{number: 80, name: http, protocol: HTTP, targetPort: {port}}}]
  resolution: STATIC
  endpoints: [{{address: "{ip}"}}]
  subjectAltNames: {names}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: shop}}
spec:
  host: shop.example.com
  trafficPolicy:
    tls: {tls}
"#,
        ip = backend.ip(),
        port = backend.port(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_rules_originate_verified_tls() {
    let pki = Pki::generate();
    let backend = tls_backend(&pki, true).await;
    let store = Bookstore::start(XdsMode::Delta).await;
    let (ca, certificate, key) = (
        pki.path("ca.crt"),
        pki.path("client.crt"),
        pki.path("client.key"),
    );
    let mutual = format!(
        "{{mode: MUTUAL, clientCertificate: {certificate}, privateKey: {key}, caCertificates: {ca}}}"
    );
    let (none, other, own) = ("[]", "[other.example.com]", "[shop.example.com]");
    // Each case follows one that answered, so its answer is the new setting's.
    let cases = [
        (
            none,
            mutual.clone(),
            200,
            "MUTUAL with the client certificate",
        ),
        (
            none,
            format!("{{mode: MUTUAL, clientCertificate: {certificate}, privateKey: {key}}}"),
            503,
            "the server checked against the system's roots, which do not have the test CA",
        ),
        (none, mutual.clone(), 200, "MUTUAL again"),
        (
            none,
            format!(
                "{{mode: MUTUAL, clientCertificate: {certificate}, privateKey: {key}, caCertificates: {ca}, subjectAltNames: [other.example.com]}}"
            ),
            503,
            "a server certificate for another name",
        ),
        (
            own,
            mutual.clone(),
            200,
            "the ServiceEntry's name for the server",
        ),
        (
            other,
            mutual.clone(),
            503,
            "the ServiceEntry's names, checked when the rule names none",
        ),
        (none, mutual.clone(), 200, "MUTUAL again"),
        (
            none,
            format!("{{mode: SIMPLE, caCertificates: {ca}}}"),
            503,
            "SIMPLE: no client certificate, which the backend requires",
        ),
    ];
    for (names, tls, status, what) in cases {
        store
            .mesh
            .write("shop.yaml", &config(backend, names, &tls))
            .unwrap();
        assert_eq!(store.mesh.meshd().config_errors(), Vec::<String>::new());
        let body = eventually(what, Duration::from_secs(30), async || {
            let (code, _, body) = get(&store.frontend, "http://shop.example.com/")
                .await
                .ok()?;
            (code == status).then_some(body)
        })
        .await;
        if status == 200 {
            assert_eq!(body, BACKEND_ANSWER, "{what}");
        }
    }
    assert_eq!(nacks(&store.mesh), 0);
}
