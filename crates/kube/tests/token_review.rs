//! The TokenReview cache against a real API server: an accepted token is reviewed once
//! and then trusted from the cache; a refused one is refused again without another
//! review, so retrying a bad token (or a flood of them) does not reach the API server
//! once per attempt.

use fleetmesh_ca::{AuthError, Authenticator, Identity};
use fleetmesh_kube::testing::{TestCluster, TestNamespace};
use fleetmesh_kube::token_review::{AUDIENCE, TokenReviewer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_cached_and_refusals_too() {
    let cluster = TestCluster::start("fleetmesh-kube-local").expect("the local cluster starts");
    let client = cluster.client().await.unwrap();
    let namespace = TestNamespace::create(&client, "token-review")
        .await
        .unwrap();
    let args = [
        "create",
        "token",
        "default",
        "-n",
        &namespace.name,
        "--audience",
        AUDIENCE,
    ];
    // A new namespace's default service account appears shortly after it.
    let token = fleetmesh_kube::testing::wait_for(
        "a token of the default service account",
        std::time::Duration::from_secs(30),
        async || cluster.run_kubectl(&args, None).ok(),
    )
    .await
    .unwrap();
    let reviewer = TokenReviewer::new(client);

    let expected = Identity::new(&namespace.name, "default");
    for _ in 0..3 {
        assert_eq!(
            reviewer.authenticate(token.trim()).await,
            Ok(expected.clone())
        );
    }
    assert_eq!(reviewer.reviews_sent(), 1, "one review, then the cache");

    let forged = format!("{}x", token.trim());
    for _ in 0..20 {
        let refused = reviewer.authenticate(&forged).await;
        assert!(matches!(refused, Err(AuthError::Refused(_))), "{refused:?}");
    }
    assert_eq!(
        reviewer.reviews_sent(),
        2,
        "one review for the forged token"
    );
}
