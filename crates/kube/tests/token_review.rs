//! The TokenReview cache against a real API server: an accepted token is reviewed once
//! and then trusted from the cache; a refused one is refused again without another
//! review, so retrying a bad token (or a flood of them) does not reach the API server
//! once per attempt; and an address whose new tokens keep being refused waits before
//! the next is reviewed, while tokens already accepted stay accepted.

use fleetmesh_ca::{AuthError, Authenticator, Identity, Origin};
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
    let pod = Origin {
        peer: Some([10, 0, 0, 1].into()),
        over_tls: true,
    };

    let expected = Identity::new(&namespace.name, "default");
    for _ in 0..3 {
        assert_eq!(
            reviewer.authenticate(token.trim(), pod).await,
            Ok(expected.clone())
        );
    }
    assert_eq!(reviewer.reviews_sent(), 1, "one review, then the cache");

    let forged = format!("{}x", token.trim());
    for _ in 0..20 {
        let refused = reviewer.authenticate(&forged, pod).await;
        assert!(matches!(refused, Err(AuthError::Refused(_))), "{refused:?}");
    }
    assert_eq!(
        reviewer.reviews_sent(),
        2,
        "one review for the forged token"
    );

    // A flood of distinct forged tokens from one address: reviewed until its budget of
    // refusals is spent, then turned away unreviewed, told to retry later.
    let flooder = Origin {
        peer: Some([10, 0, 0, 66].into()),
        over_tls: true,
    };
    let mut unavailable = 0;
    for i in 0..100 {
        match reviewer
            .authenticate(&format!("{forged}{i}"), flooder)
            .await
        {
            Err(AuthError::Refused(_)) => {}
            Err(AuthError::Unavailable(_)) => unavailable += 1,
            other => panic!("a forged token: {other:?}"),
        }
    }
    let flood_reviews = reviewer.reviews_sent() - 2;
    assert!(
        (30..=40).contains(&flood_reviews),
        "{flood_reviews} reviews for 100 forged tokens from one address"
    );
    assert_eq!(flood_reviews + unavailable, 100);
    // Accepted tokens from that address stay accepted; other addresses are reviewed.
    assert_eq!(
        reviewer.authenticate(token.trim(), flooder).await,
        Ok(expected.clone())
    );
    let elsewhere = reviewer.authenticate(&format!("{forged}y"), pod).await;
    assert!(
        matches!(elsewhere, Err(AuthError::Refused(_))),
        "{elsewhere:?}"
    );
    assert_eq!(reviewer.reviews_sent(), 2 + flood_reviews + 1);
}
