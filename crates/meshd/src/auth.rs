//! Who may get certificates and config from meshd's own mesh: workloads holding a token
//! meshd issued (local mode, `fleetmesh token`), and, with a cluster, pods presenting
//! their projected service-account token, checked by the cluster's TokenReview API.
//! (A fleet member's pods are checked by their own cluster: see `fleet::members`.)
//!
//! With a cluster, meshd's own tokens are accepted only on its plaintext port (on
//! loopback unless the operator moves it): the TLS port faces the cluster's network,
//! where only what the cluster vouches for is an identity.

use fleetmesh_ca::{AuthError, Authenticator, Identity, Origin, TokenIssuer};
use fleetmesh_kube::token_review::TokenReviewer;
use futures::future::BoxFuture;
use std::sync::Arc;

pub struct MeshAuthenticator {
    pub tokens: Arc<TokenIssuer>,
    pub cluster: Option<TokenReviewer>,
}

impl Authenticator for MeshAuthenticator {
    fn authenticate<'a>(
        &'a self,
        token: &'a str,
        origin: Origin,
    ) -> BoxFuture<'a, Result<Identity, AuthError>> {
        match &self.cluster {
            Some(cluster) if !TokenIssuer::is_ours(token) => cluster.authenticate(token, origin),
            Some(_) if origin.over_tls => Box::pin(async {
                Err(AuthError::Refused(
                    "meshd's own tokens are not accepted on its TLS port; pods present \
                     their service-account token"
                        .into(),
                ))
            }),
            _ => self.tokens.authenticate(token, origin),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A reviewer that must never be asked: its API server is nowhere.
    fn unreachable_cluster() -> TokenReviewer {
        let config = kube::Config::new("https://127.0.0.1:9".parse().unwrap());
        TokenReviewer::new(kube::Client::try_from(config).unwrap())
    }

    #[tokio::test]
    async fn with_a_cluster_meshd_tokens_count_only_on_the_plaintext_port() {
        let keys = tempfile::tempdir().unwrap();
        let identity = Identity::new("shop", "web");
        let mut authenticator = MeshAuthenticator {
            tokens: Arc::new(TokenIssuer::load_or_create(keys.path()).unwrap()),
            cluster: None,
        };
        let token = authenticator
            .tokens
            .issue(&identity, Duration::from_secs(60))
            .token;
        let plaintext = Origin {
            peer: Some([127, 0, 0, 1].into()),
            over_tls: false,
        };
        let tls = Origin {
            over_tls: true,
            ..plaintext
        };
        // Local mode: no cluster vouches for anyone, meshd's tokens are the identities.
        for origin in [plaintext, tls] {
            assert_eq!(
                authenticator.authenticate(&token, origin).await,
                Ok(identity.clone())
            );
        }
        authenticator.cluster = Some(unreachable_cluster());
        assert_eq!(
            authenticator.authenticate(&token, plaintext).await,
            Ok(identity.clone())
        );
        let refused = authenticator.authenticate(&token, tls).await;
        assert!(
            matches!(&refused, Err(AuthError::Refused(why)) if why.contains("TLS port")),
            "{refused:?}"
        );
    }
}
