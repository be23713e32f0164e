//! AuthorizationPolicy enforced by real Envoy sidecars (RBAC): deny by path, allow by the
//! caller's mTLS identity, conditions on request headers, and the allow-nothing form.

use fleetmesh_e2e::*;
use std::time::Duration;

fn policy(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
         metadata: {{name: {name}, namespace: default}}\nspec:\n{spec}"
    )
}

async fn status(from: &Workload, url: &str, headers: &[(&str, &str)]) -> u16 {
    match request(from, reqwest::Method::GET, url, headers).await {
        Ok((status, _, _)) => status,
        Err(e) => panic!("{url}: {e}"),
    }
}

async fn until_status(from: &Workload, url: &str, headers: &[(&str, &str)], expected: u16) {
    eventually(
        &format!("{url} to answer {expected}"),
        Duration::from_secs(20),
        async || (status(from, url, headers).await == expected).then_some(()),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_policies_hold() {
    let store = Bookstore::start(XdsMode::Sotw).await;
    let frontend = &store.frontend;

    // DENY by path (and by a request header) on reviews; everything else passes.
    store
        .mesh
        .write(
            "reviews-deny.yaml",
            &policy(
                "reviews-deny",
                "  selector: {matchLabels: {app: reviews}}\n  action: DENY\n  rules:\n  \
                 - to: [{operation: {paths: [/admin*]}}]\n  \
                 - when: [{key: \"request.headers[x-user]\", values: [mallory]}]\n",
            ),
        )
        .unwrap();
    until_status(frontend, "http://reviews:9080/admin/users", &[], 403).await;
    assert_eq!(
        status(frontend, "http://reviews:9080/books", &[]).await,
        200
    );
    assert_eq!(
        status(
            frontend,
            "http://reviews:9080/books",
            &[("x-user", "mallory")]
        )
        .await,
        403
    );
    assert_eq!(
        status(
            frontend,
            "http://reviews:9080/books",
            &[("x-user", "alice")]
        )
        .await,
        200
    );

    // ALLOW by principal on ratings: the frontend's mTLS identity gets in, reviews' not.
    store
        .mesh
        .write(
            "ratings-allow.yaml",
            &policy(
                "ratings-allow",
                "  selector: {matchLabels: {app: ratings}}\n  rules:\n  \
                 - from: [{source: {principals: [cluster.local/ns/default/sa/frontend]}}]\n",
            ),
        )
        .unwrap();
    until_status(&store.reviews_v1, "http://ratings:9080/", &[], 403).await;
    assert_eq!(status(frontend, "http://ratings:9080/", &[]).await, 200);

    // Allow-nothing for the whole namespace: an ALLOW policy without rules.
    store
        .mesh
        .write("allow-nothing.yaml", &policy("allow-nothing", "  {}\n"))
        .unwrap();
    until_status(frontend, "http://reviews:9080/books", &[], 403).await;
    // ratings' own ALLOW still admits the frontend: ALLOW policies add up.
    assert_eq!(status(frontend, "http://ratings:9080/", &[]).await, 200);
    assert_eq!(
        status(&store.reviews_v1, "http://ratings:9080/", &[]).await,
        403
    );

    store.mesh.remove("allow-nothing.yaml").unwrap();
    until_status(frontend, "http://reviews:9080/books", &[], 200).await;
    assert_eq!(nacks(&store.mesh), 0, "Envoy accepted every policy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_accounts_and_trust_domains_name_the_caller() {
    let store = Bookstore::start(XdsMode::Delta).await;
    let (frontend, reviews) = (&store.frontend, &store.reviews_v1);
    let on_ratings = |rules: &str| {
        policy(
            "ratings",
            &format!("  selector: {{matchLabels: {{app: ratings}}}}\n{rules}"),
        )
    };

    // A service account without a namespace is in the policy's.
    let allow_frontend = "  rules: [{from: [{source: {serviceAccounts: [frontend]}}]}]\n";
    store
        .mesh
        .write("ratings.yaml", &on_ratings(allow_frontend))
        .unwrap();
    until_status(reviews, "http://ratings:9080/", &[], 403).await;
    assert_eq!(status(frontend, "http://ratings:9080/", &[]).await, 200);

    let deny_all_but_frontend =
        "  action: DENY\n  rules: [{from: [{source: {notServiceAccounts: [default/frontend]}}]}]\n";
    store
        .mesh
        .write("ratings.yaml", &on_ratings(deny_all_but_frontend))
        .unwrap();
    until_status(reviews, "http://ratings:9080/", &[], 403).await;
    assert_eq!(status(frontend, "http://ratings:9080/", &[]).await, 200);

    // The mesh's trust domain is cluster.local: an exact name and a wildcard admit
    // everyone in it, another domain no one.
    for (domains, expected) in [("[other.example]", 403), ("['cluster.*']", 200)] {
        let rules = format!("  rules: [{{from: [{{source: {{trustDomains: {domains}}}}}]}}]\n");
        store
            .mesh
            .write("ratings.yaml", &on_ratings(&rules))
            .unwrap();
        until_status(frontend, "http://ratings:9080/", &[], expected).await;
        assert_eq!(
            status(reviews, "http://ratings:9080/", &[]).await,
            expected,
            "trustDomains {domains}"
        );
    }
    assert_eq!(nacks(&store.mesh), 0, "Envoy accepted every policy");
}
