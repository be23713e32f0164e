//! Mutual TLS between real Envoy sidecars with certificates from meshd's CA:
//! PeerAuthentication STRICT / PERMISSIVE / DISABLE on the inbound side, auto mTLS on the
//! outbound side, and the caller's SPIFFE id handed to the app.

use fleetmesh_e2e::*;
use std::time::Duration;

const XFCC: &str = "x-forwarded-client-cert";
const FRONTEND_ID: &str = "URI=spiffe://cluster.local/ns/default/sa/frontend";

/// A client that talks to a workload's inbound port directly, in plaintext: no sidecar.
async fn plaintext(to: &Workload, headers: &[(&str, &str)]) -> Result<(u16, String), String> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut request = client.get(format!("http://{}/", to.address(9080)));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    Ok((status, response.text().await.map_err(|e| e.to_string())?))
}

fn policy(name: &str, namespace: &str, selector: &str, mode: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
         metadata: {{name: {name}, namespace: {namespace}}}\n\
         spec: {{{selector} mtls: {{mode: {mode}}}}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_authentication_strict_permissive_disable() {
    let store = Bookstore::start(XdsMode::Delta).await;
    let ratings = &store.ratings;

    // Default (PERMISSIVE): sidecars talk mTLS and the app sees the caller's identity;
    // plaintext is accepted too, and a forged identity header is dropped.
    let (status, _, body) = get(&store.frontend, "http://ratings:9080/").await.unwrap();
    assert_eq!(status, 200);
    let xfcc = body
        .lines()
        .find(|l| l.starts_with(XFCC))
        .unwrap_or_else(|| panic!("the app sees no {XFCC}:\n{body}"));
    assert!(xfcc.contains(FRONTEND_ID), "{xfcc}");
    assert!(
        xfcc.contains("By=spiffe://cluster.local/ns/default/sa/ratings"),
        "{xfcc}"
    );
    let (status, body) = plaintext(ratings, &[(XFCC, "URI=spiffe://forged")])
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(
        !body.contains("forged"),
        "a plaintext caller forged its identity:\n{body}"
    );

    // STRICT, mesh-wide from the root namespace: plaintext is refused, mTLS still works.
    store
        .mesh
        .write(
            "peer-authentication.yaml",
            &policy("default", "istio-system", "", "STRICT"),
        )
        .unwrap();
    eventually(
        "plaintext to be refused",
        Duration::from_secs(20),
        async || plaintext(ratings, &[]).await.is_err().then_some(()),
    )
    .await;
    let (status, _, body) = get(&store.frontend, "http://ratings:9080/").await.unwrap();
    assert_eq!(status, 200);
    assert!(body.contains(FRONTEND_ID), "{body}");

    // A sidecar cannot answer for another service: an endpoint of `shadow` (service
    // account shadow) at the ratings sidecar's address shows ratings' certificate, and
    // the frontend's sidecar refuses it.
    let shadow = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: shadow}}\n\
         spec: {{selector: {{app: shadow}}, ports: [{{name: http, port: 9080}}]}}\n---\n\
         apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: shadow}}\n\
         spec: {{address: \"{}\", serviceAccount: shadow, \
         labels: {{app: shadow, security.istio.io/tlsMode: istio}}}}\n",
        ratings.ip
    );
    store.mesh.write("shadow.yaml", &shadow).unwrap();
    wait_for_status(&store.frontend, "http://shadow:9080/", 503).await;
    assert_eq!(
        get(&store.frontend, "http://ratings:9080/")
            .await
            .unwrap()
            .0,
        200,
        "ratings itself still answers"
    );

    // DISABLE for the ratings workload alone: plaintext only, and the frontend's sidecar
    // follows (auto mTLS sends plaintext to it), while reviews stays STRICT.
    let disable = policy(
        "ratings",
        "default",
        "selector: {matchLabels: {app: ratings}},",
        "DISABLE",
    );
    store
        .mesh
        .write("ratings-plaintext.yaml", &disable)
        .unwrap();
    eventually(
        "plaintext to ratings",
        Duration::from_secs(20),
        async || matches!(plaintext(ratings, &[]).await, Ok((200, _))).then_some(()),
    )
    .await;
    // Connections opened before the change drain first; new ones are plaintext.
    eventually(
        "the frontend to reach ratings in plaintext",
        Duration::from_secs(20),
        async || {
            let (status, _, body) = get(&store.frontend, "http://ratings:9080/").await.ok()?;
            (status == 200 && !body.contains(XFCC)).then_some(())
        },
    )
    .await;
    assert!(plaintext(&store.reviews_v1, &[]).await.is_err());
    let (status, _, body) = get(&store.frontend, "http://reviews:9080/").await.unwrap();
    assert_eq!(status, 200);
    assert!(body.contains(FRONTEND_ID), "{body}");

    assert_eq!(nacks(&store.mesh), 0, "Envoy accepted every config");
}
