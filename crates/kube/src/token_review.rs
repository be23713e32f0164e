//! Pods prove who they are with their projected service-account token (audience
//! `istio-ca`, mounted by the injector); the cluster's TokenReview API says whether it is
//! valid and for which service account. Answers are cached briefly by the token's hash,
//! so reconnecting proxies do not cost one review each.

use fleetmesh_ca::{AuthError, Authenticator, Identity};
use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The audience the injector asks the kubelet to put in pods' tokens (as Istio does).
pub const AUDIENCE: &str = "istio-ca";
const CACHE_TTL: Duration = Duration::from_secs(60);
/// More cached answers than this and the cache starts over (bounded memory).
const CACHE_LIMIT: usize = 16_384;

/// Checks pods' tokens with the cluster's TokenReview API, caching answers briefly.
pub struct TokenReviewer {
    reviews: Api<TokenReview>,
    cache: Mutex<HashMap<[u8; 32], (Identity, Instant)>>,
}

impl TokenReviewer {
    /// Reviews with `client`'s API server.
    pub fn new(client: kube::Client) -> TokenReviewer {
        TokenReviewer {
            reviews: Api::all(client),
            cache: Mutex::new(HashMap::new()),
        }
    }

    async fn review(&self, token: &str) -> Result<Identity, AuthError> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some((identity, at)) = self.cache.lock().get(&key)
            && at.elapsed() < CACHE_TTL
        {
            return Ok(identity.clone());
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: Some(vec![AUDIENCE.to_string()]),
            },
            ..Default::default()
        };
        let answer = self
            .reviews
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| AuthError::Unavailable(format!("TokenReview: {e}")))?;
        let status = answer.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            return Err(AuthError::Refused(
                status
                    .error
                    .unwrap_or_else(|| "the cluster did not authenticate it".into()),
            ));
        }
        if !status
            .audiences
            .unwrap_or_default()
            .iter()
            .any(|a| a == AUDIENCE)
        {
            return Err(AuthError::Refused(format!(
                "its audience is not {AUDIENCE}"
            )));
        }
        let username = status.user.and_then(|u| u.username).unwrap_or_default();
        let identity = service_account(&username)
            .ok_or_else(|| AuthError::Refused(format!("{username:?} is not a service account")))?;
        let mut cache = self.cache.lock();
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(key, (identity.clone(), Instant::now()));
        Ok(identity)
    }
}

impl Authenticator for TokenReviewer {
    fn authenticate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Identity, AuthError>> {
        Box::pin(self.review(token))
    }
}

/// `system:serviceaccount:<namespace>:<name>` → the identity.
fn service_account(username: &str) -> Option<Identity> {
    let rest = username.strip_prefix("system:serviceaccount:")?;
    let (namespace, name) = rest.split_once(':')?;
    (!namespace.is_empty() && !name.is_empty() && !name.contains(':'))
        .then(|| Identity::new(namespace, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_service_accounts_are_identities() {
        assert_eq!(
            service_account("system:serviceaccount:shop:web"),
            Some(Identity::new("shop", "web"))
        );
        for other in [
            "admin",
            "system:serviceaccount:shop",
            "system:serviceaccount::web",
            "system:node:n1",
        ] {
            assert_eq!(service_account(other), None, "{other}");
        }
    }
}
