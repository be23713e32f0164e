//! Routing through real Envoy sidecars: matches, default route, 404, weighted split,
//! subsets, redirects and direct responses. Both xDS protocols pass the same suite, and
//! so do sidecars that fetch their virtual hosts on demand.

use fleetmesh_e2e::*;

const ROUTES: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {exact: /exact}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - match: [{uri: {prefix: /v1/}}]
    route: [{destination: {host: reviews, subset: v1}}]
  - match: [{headers: {x-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - match: [{method: {exact: POST}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - match: [{uri: {regex: "/r[0-9]+"}}]
    route: [{destination: {host: reviews, subset: v1}}]
  - match: [{uri: {prefix: /old/}}]
    redirect: {prefix_rewrite: /v1/}
  - match: [{uri: {exact: /teapot}}]
    directResponse: {status: 418, body: {string: short and stout}}
  - match: [{headers: {X-Team: {exact: red}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - match: [{uri: {prefix: /shelf/}, withoutHeaders: {x-tier: {exact: gold}}}]
    rewrite: {uriRegexRewrite: {match: "^/shelf/([a-z]+)/([0-9]+)$", rewrite: "/books/\\2/\\1"}}
    route: [{destination: {host: reviews, subset: v1}}]
    mirrors: [{destination: {host: ratings}, percentage: {value: 100}}]
  - match: [{uri: {prefix: /shelf/}}]
    route: [{destination: {host: reviews, subset: v2}}]
"#;

const SPLIT: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 8}
    - {destination: {host: reviews, subset: v2}, weight: 2}
"#;

async fn all_from(
    store: &Bookstore,
    method: reqwest::Method,
    url: &str,
    headers: &[(&str, &str)],
    version: &str,
) {
    for _ in 0..20 {
        let (status, got, _) = request(&store.frontend, method.clone(), url, headers)
            .await
            .unwrap();
        assert_eq!(
            (status, got.as_str()),
            (200, version),
            "{method} {url} {headers:?}"
        );
    }
}

/// Header names in any case, a redirect that rewrites a prefix (spelt with its .proto
/// field name, as Istio also reads it) and an answer the sidecar gives itself.
async fn case_redirect_and_direct_response(store: &Bookstore) {
    use reqwest::Method;
    // The route matches `X-Team`: header names match whatever their case.
    all_from(
        store,
        Method::GET,
        "http://reviews:9080/other",
        &[("x-team", "red")],
        "v2",
    )
    .await;
    // /old/books is redirected to /v1/books (the client follows), which v1 answers; the
    // redirect is spelt with its .proto field name, as Istio also reads it.
    all_from(
        store,
        Method::GET,
        "http://reviews:9080/old/books",
        &[],
        "v1",
    )
    .await;
    let (status, _, body) = request(
        &store.frontend,
        Method::GET,
        "http://reviews:9080/teapot",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(
        (status, body.as_str()),
        (418, "short and stout"),
        "the sidecar answers itself"
    );
}

/// A requests counter of the frontend sidecar's cluster for ratings:9080.
fn requests_to_ratings(store: &Bookstore) -> u64 {
    let name = "cluster.outbound|9080||ratings.default.svc.cluster.local.upstream_rq_total";
    envoy_stat(&store.frontend, name).unwrap_or(0)
}

/// A path rewritten by a regex, a match that excludes a header value, and mirrors.
async fn case_regex_rewrite_and_mirrors(store: &Bookstore) {
    use reqwest::Method;
    let mirrored_before = requests_to_ratings(store);
    let url = "http://reviews:9080/shelf/poems/42";
    let (status, version, body) = request(&store.frontend, Method::GET, url, &[])
        .await
        .unwrap();
    assert_eq!((status, version.as_str()), (200, "v1"));
    assert!(body.contains("path=/books/42/poems\n"), "{body}");
    // A copy went to ratings (its answer dropped).
    eventually(
        "the mirrored request to reach ratings",
        std::time::Duration::from_secs(10),
        async || (requests_to_ratings(store) > mirrored_before).then_some(()),
    )
    .await;
    // withoutHeaders: with x-tier: gold the first route does not match.
    all_from(store, Method::GET, url, &[("x-tier", "gold")], "v2").await;
}

async fn routing(store: Bookstore) {
    // Without a VirtualService: the default route reaches both versions.
    let counts = split(&store.frontend, "http://reviews:9080/anything", 60).await;
    assert!(
        counts.contains_key("v1") && counts.contains_key("v2"),
        "default route should reach both versions: {counts:?}"
    );

    let ms = store
        .apply(
            "reviews-vs.yaml",
            ROUTES,
            "http://reviews:9080/unmatched",
            404,
        )
        .await;
    println!("VirtualService reached Envoy in {} ms", ms.as_millis());
    use reqwest::Method;
    all_from(&store, Method::GET, "http://reviews:9080/exact", &[], "v2").await;
    all_from(
        &store,
        Method::GET,
        "http://reviews:9080/v1/books",
        &[],
        "v1",
    )
    .await;
    all_from(&store, Method::GET, "http://reviews:9080/r42", &[], "v1").await;
    all_from(
        &store,
        Method::GET,
        "http://reviews:9080/other",
        &[("x-user", "jason")],
        "v2",
    )
    .await;
    all_from(&store, Method::POST, "http://reviews:9080/other", &[], "v2").await;
    case_redirect_and_direct_response(&store).await;
    case_regex_rewrite_and_mirrors(&store).await;
    for unmatched in [
        "http://reviews:9080/exactly",
        "http://reviews:9080/other",
        "http://reviews:9080/v1",
    ] {
        assert_eq!(
            get(&store.frontend, unmatched).await.unwrap().0,
            404,
            "{unmatched} matches no route"
        );
    }
    let (status, _, _) = request(
        &store.frontend,
        Method::GET,
        "http://reviews:9080/other",
        &[("x-user", "bob")],
    )
    .await
    .unwrap();
    assert_eq!(status, 404);
    // Other services keep their default route.
    assert_eq!(
        get(&store.frontend, "http://ratings:9080/x")
            .await
            .unwrap()
            .0,
        200
    );
    // A host the mesh does not know: no virtual host.
    assert_eq!(
        get(&store.frontend, "http://nowhere:9080/")
            .await
            .unwrap()
            .0,
        404
    );

    store
        .apply(
            "reviews-vs.yaml",
            SPLIT,
            "http://reviews:9080/unmatched",
            200,
        )
        .await;
    // Weights 8 and 2 are shares of their sum (Istio normalises): p = 0.8. Over 1000
    // requests σ ≈ 12.6, so ±50 is about 4σ.
    let counts = split(&store.frontend, "http://reviews:9080/", 1000).await;
    let v1 = counts.get("v1").copied().unwrap_or(0);
    let v2 = counts.get("v2").copied().unwrap_or(0);
    println!("8:2 split over 1000 requests: v1 {v1}, v2 {v2}");
    assert_eq!(v1 + v2, 1000, "every request succeeds: {counts:?}");
    assert!(
        (750..=850).contains(&v1),
        "v1 should get 80% ± 5 points: {counts:?}"
    );
    assert_eq!(nacks(&store.mesh), 0, "Envoy rejected config");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_sotw() {
    routing(Bookstore::start(XdsMode::Sotw).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_delta() {
    routing(Bookstore::start(XdsMode::Delta).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_on_demand() {
    let mesh = LocalMesh::start_configured(None, XdsMode::Delta, |meshd| {
        meshd.on_demand_routes = true;
    });
    routing(Bookstore::start_on(mesh.await.expect("meshd starts")).await).await;
}
