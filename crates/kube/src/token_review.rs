//! Pods prove who they are with their projected service-account token (audience
//! `istio-ca`, mounted by the injector); the cluster's TokenReview API says whether it is
//! valid and for which service account. Answers are cached briefly by the token's hash,
//! so reconnecting proxies do not cost one review each: an accepted token for a minute
//! at most and never past its own expiry, a refused one for a few seconds (so that a
//! client retrying a bad token, or an unauthenticated flood, cannot make meshd send the
//! tenant's API server one review per attempt). A source whose tokens keep being refused
//! waits before its next new token is reviewed ([`RefusalBudget`]). A review that could
//! not be made is not remembered.

use fleetmesh_ca::refusals::RefusalBudget;
use fleetmesh_ca::{AuthError, Authenticator, Identity, Origin};
use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// The audience the injector asks the kubelet to put in pods' tokens (as Istio does).
pub const AUDIENCE: &str = "istio-ca";
const CACHE_TTL: Duration = Duration::from_secs(60);
/// How long a refused token stays refused without another review.
const REFUSED_TTL: Duration = Duration::from_secs(10);
/// More cached answers than this and the cache starts over (bounded memory).
const CACHE_LIMIT: usize = 16_384;

/// An answer, and until when it holds.
type Remembered = (Result<Identity, AuthError>, Instant);

/// Checks pods' tokens with the cluster's TokenReview API, caching answers briefly.
pub struct TokenReviewer {
    reviews: Api<TokenReview>,
    /// Each answer, by the token's hash, until when it holds.
    cache: Mutex<HashMap<[u8; 32], Remembered>>,
    /// TokenReviews sent so far.
    sent: AtomicU64,
    /// Refused reviews, by the source that presented the token.
    refusals: RefusalBudget,
}

impl TokenReviewer {
    /// Reviews with `client`'s API server.
    pub fn new(client: kube::Client) -> TokenReviewer {
        TokenReviewer {
            reviews: Api::all(client),
            cache: Mutex::new(HashMap::new()),
            sent: AtomicU64::new(0),
            refusals: RefusalBudget::default(),
        }
    }

    /// How many TokenReviews it has sent.
    pub fn reviews_sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    async fn review(&self, token: &str, origin: Origin) -> Result<Identity, AuthError> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some((answer, until)) = self.cache.lock().get(&key)
            && Instant::now() < *until
        {
            return answer.clone();
        }
        if !self.refusals.allows(origin.peer) {
            return Err(AuthError::Unavailable(
                "too many refused tokens from this address; retry later".into(),
            ));
        }
        let answer = self.ask(token).await;
        let holds = match &answer {
            Ok(_) => Some(cache_time(token, SystemTime::now())),
            Err(AuthError::Unavailable(_)) => None,
            Err(_) => {
                self.refusals.refused(origin.peer);
                Some(REFUSED_TTL)
            }
        };
        if let Some(holds) = holds {
            let mut cache = self.cache.lock();
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
            cache.insert(key, (answer.clone(), Instant::now() + holds));
        }
        answer
    }

    /// What the API server says of `token`.
    async fn ask(&self, token: &str) -> Result<Identity, AuthError> {
        self.sent.fetch_add(1, Ordering::Relaxed);
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
        service_account(&username)
            .ok_or_else(|| AuthError::Refused(format!("{username:?} is not a service account")))
    }
}

/// How long an accepted `token` may be trusted without another review at `now`:
/// [`CACHE_TTL`], or less when the token expires sooner.
fn cache_time(token: &str, now: SystemTime) -> Duration {
    match crate::jwt::lifetime(token) {
        Some((_, expires)) => expires
            .duration_since(now)
            .unwrap_or_default()
            .min(CACHE_TTL),
        None => CACHE_TTL,
    }
}

impl Authenticator for TokenReviewer {
    fn authenticate<'a>(
        &'a self,
        token: &'a str,
        origin: Origin,
    ) -> BoxFuture<'a, Result<Identity, AuthError>> {
        Box::pin(self.review(token, origin))
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
    fn an_accepted_token_is_trusted_no_longer_than_it_lives() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(10_000);
        let token = |exp: u64| crate::jwt::for_test(&format!(r#"{{"iat":1,"exp":{exp}}}"#));
        assert_eq!(cache_time(&token(10_020), now), Duration::from_secs(20));
        assert_eq!(cache_time(&token(9_000), now), Duration::ZERO);
        assert_eq!(cache_time(&token(99_999), now), CACHE_TTL);
        assert_eq!(cache_time("static", now), CACHE_TTL);
    }

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
