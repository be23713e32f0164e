//! RequestAuthentication with real Envoy: keys fetched once by meshd from a JWKS server
//! (on loopback), tokens checked by the sidecars (from the Authorization header or, by
//! default, the `access_token` query parameter), claims used by AuthorizationPolicy and
//! copied into headers for the app.

use fleetmesh_e2e::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Serves `body` as the JWKS on loopback; counts the fetches.
async fn jwks_server(body: String) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let fetches = Arc::new(AtomicUsize::new(0));
    let counted = fetches.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await;
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
        }
    });
    (address, fetches)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_tokens_are_checked_and_their_claims_authorize() {
    let issuer = JwtIssuer::generate();
    let (jwks_address, fetches) = jwks_server(issuer.jwks()).await;
    let store = Bookstore::start(XdsMode::Delta).await;
    store
        .mesh
        .write(
            "reviews-jwt.yaml",
            &format!(
                "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\n\
                 metadata: {{name: reviews-jwt, namespace: default}}\n\
                 spec:\n  selector: {{matchLabels: {{app: reviews}}}}\n  \
                 jwtRules: [{{issuer: \"{ISSUER}\", jwksUri: \"http://{jwks_address}/jwks.json\", \
                 outputClaimToHeaders: [{{header: x-jwt-sub, claim: sub}}], \
                 outputPayloadToHeader: x-jwt-payload}}]\n\
                 ---\n\
                 apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
                 metadata: {{name: reviews-admins, namespace: default}}\n\
                 spec:\n  selector: {{matchLabels: {{app: reviews}}}}\n  rules:\n  \
                 - from: [{{source: {{requestPrincipals: [\"{ISSUER}/alice\"]}}}}]\n    \
                 when: [{{key: \"request.auth.claims[groups]\", values: [admins]}}]\n"
            ),
        )
        .unwrap();
    let bearer = |token: String| format!("Bearer {token}");
    let status = async |token: Option<String>| {
        let headers: Vec<(&str, String)> =
            token.map(|t| ("authorization", t)).into_iter().collect();
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        request(
            &store.frontend,
            reqwest::Method::GET,
            "http://reviews:9080/",
            &headers,
        )
        .await
        .map(|(status, _, _)| status)
        .unwrap_or(0)
    };

    assert_eq!(store.mesh.meshd().config_errors(), Vec::<String>::new());
    // The policies apply (no token: no request principal), then the keys arrive.
    eventually("the policy to hold", Duration::from_secs(30), async || {
        (status(None).await == 403).then_some(())
    })
    .await;
    let admin = bearer(issuer.token("alice", &["admins", "users"]));
    eventually(
        "a valid admin token to be accepted",
        Duration::from_secs(30),
        async || (status(Some(admin.clone())).await == 200).then_some(()),
    )
    .await;
    assert_eq!(
        status(Some(bearer(issuer.token("alice", &["users"])))).await,
        403,
        "a valid token without the claim"
    );
    assert_eq!(
        status(Some(bearer(issuer.token("bob", &["admins"])))).await,
        403,
        "a valid token of another principal"
    );
    // The app sees the token's subject and payload in the headers the rule names.
    let (_, _, body) = request(
        &store.frontend,
        reqwest::Method::GET,
        "http://reviews:9080/",
        &[("authorization", &admin)],
    )
    .await
    .unwrap();
    assert!(body.contains("x-jwt-sub: alice\n"), "{body}");
    assert!(body.contains("x-jwt-payload: ey"), "{body}");
    // Istio's default token locations: the query parameter access_token too.
    let token = issuer.token("alice", &["admins"]);
    let by_parameter = format!("http://reviews:9080/?access_token={token}");
    let (status_by_parameter, _, _) = get(&store.frontend, &by_parameter).await.unwrap();
    assert_eq!(status_by_parameter, 200, "a token in access_token");

    let stranger = JwtIssuer::generate().token("alice", &["admins"]);
    assert_eq!(
        status(Some(bearer(stranger))).await,
        401,
        "signed by another key"
    );
    assert_eq!(
        status(Some(bearer("not.a.jwt".into()))).await,
        401,
        "malformed"
    );

    // Other workloads are not affected by reviews' policies.
    assert_eq!(
        get(&store.frontend, "http://ratings:9080/")
            .await
            .unwrap()
            .0,
        200
    );
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        1,
        "meshd fetched the keys once for both reviews sidecars; no proxy fetched them"
    );
    assert_eq!(nacks(&store.mesh), 0);
}

/// `scope` (always) and the claims a rule lists in `spaceDelimitedClaims` are lists of
/// words: a condition on one of them matches any word, as with Istio.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn space_delimited_claims_match_by_word() {
    let issuer = JwtIssuer::generate();
    let (jwks_address, _) = jwks_server(issuer.jwks()).await;
    let store = Bookstore::start(XdsMode::Sotw).await;
    store
        .mesh
        .write(
            "ratings-jwt.yaml",
            &format!(
                "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\n\
                 metadata: {{name: ratings-jwt, namespace: default}}\n\
                 spec:\n  selector: {{matchLabels: {{app: ratings}}}}\n  \
                 jwtRules: [{{issuer: \"{ISSUER}\", jwksUri: \"http://{jwks_address}/jwks.json\", \
                 spaceDelimitedClaims: [roles]}}]\n\
                 ---\n\
                 apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
                 metadata: {{name: ratings-writers, namespace: default}}\n\
                 spec:\n  selector: {{matchLabels: {{app: ratings}}}}\n  rules:\n  \
                 - when: [{{key: \"request.auth.claims[scope]\", values: [write]}}, \
                 {{key: \"request.auth.claims[roles]\", values: [editor]}}]\n"
            ),
        )
        .unwrap();
    assert_eq!(store.mesh.meshd().config_errors(), Vec::<String>::new());
    let status = async |claims: serde_json::Value| {
        let token = format!("Bearer {}", issuer.token_with("alice", claims));
        request(
            &store.frontend,
            reqwest::Method::GET,
            "http://ratings:9080/",
            &[("authorization", &token)],
        )
        .await
        .map(|(status, _, _)| status)
        .unwrap_or(0)
    };
    // The policy holds (no token: no claims), then the keys arrive.
    eventually("the policy to hold", Duration::from_secs(30), async || {
        let (status, _, _) = get(&store.frontend, "http://ratings:9080/").await.ok()?;
        (status == 403).then_some(())
    })
    .await;
    let both = serde_json::json!({"scope": "read write", "roles": "viewer editor"});
    eventually(
        "a token with both words to be accepted",
        Duration::from_secs(30),
        async || (status(both.clone()).await == 200).then_some(()),
    )
    .await;
    for (claims, what) in [
        (
            serde_json::json!({"scope": "read", "roles": "viewer editor"}),
            "scope without the word",
        ),
        (
            serde_json::json!({"scope": "read write", "roles": "viewer"}),
            "roles without the word",
        ),
        (
            serde_json::json!({"scope": "read write", "roles": "editors"}),
            "words match whole",
        ),
    ] {
        assert_eq!(status(claims).await, 403, "{what}");
    }
    assert_eq!(nacks(&store.mesh), 0);
}
