//! meshd's own workload tokens (local mode): `fm1.<hex of "namespace/sa">.<hex HMAC>`,
//! signed with a key kept beside the CA's keys. Stateless, so a restarted meshd accepts
//! the tokens it issued before; whoever holds a token may act as its identity, so it is
//! handed to one workload only (a 0600 file) and never logged.

use crate::auth::{AuthError, Authenticator};
use crate::identity::Identity;
use futures::future::BoxFuture;
use ring::hmac;
use std::path::Path;

const PREFIX: &str = "fm1";
const KEY_FILE: &str = "token-key";

/// Issues and checks meshd's own tokens (local mode): HMAC-signed identities.
pub struct TokenIssuer {
    key: hmac::Key,
}

impl TokenIssuer {
    /// Loads the signing key from `dir`, creating it (0600) on first use.
    pub fn load_or_create(dir: &Path) -> std::io::Result<TokenIssuer> {
        let path = dir.join(KEY_FILE);
        let secret = crate::files::read_or_create_secret(&path, 32, |random| random.to_vec())?;
        Ok(TokenIssuer {
            key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
        })
    }

    /// A token that proves `identity` to this meshd.
    pub fn issue(&self, identity: &Identity) -> String {
        let subject = hex::encode(format!(
            "{}/{}",
            identity.namespace, identity.service_account
        ));
        let tag = hmac::sign(&self.key, subject.as_bytes());
        format!("{PREFIX}.{subject}.{}", hex::encode(tag.as_ref()))
    }

    /// Whether `token` has the form of meshd's own tokens (a Kubernetes service-account
    /// JWT never does).
    pub fn is_ours(token: &str) -> bool {
        token
            .strip_prefix(PREFIX)
            .is_some_and(|rest| rest.starts_with('.'))
    }

    /// The identity `token` proves, if this issuer signed it.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let mut parts = token.split('.');
        let (Some(PREFIX), Some(subject), Some(tag), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Invalid("not a fleetmesh token"));
        };
        let tag = hex::decode(tag).map_err(|_| AuthError::Invalid("malformed signature"))?;
        hmac::verify(&self.key, subject.as_bytes(), &tag)
            .map_err(|_| AuthError::Invalid("bad signature"))?;
        let subject = hex::decode(subject)
            .ok()
            .and_then(|s| String::from_utf8(s).ok())
            .ok_or(AuthError::Invalid("malformed subject"))?;
        let (namespace, service_account) = subject
            .split_once('/')
            .ok_or(AuthError::Invalid("malformed subject"))?;
        Ok(Identity::new(namespace, service_account))
    }
}

impl Authenticator for TokenIssuer {
    fn authenticate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Identity, AuthError>> {
        Box::pin(async move { self.verify(token) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_proves_its_identity_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let issuer = TokenIssuer::load_or_create(dir.path()).unwrap();
        let reviews = Identity::new("bookinfo", "reviews");
        let token = issuer.issue(&reviews);
        assert_eq!(issuer.verify(&token), Ok(reviews));

        // Another subject under the same signature is refused.
        let forged = format!(
            "fm1.{}.{}",
            hex::encode("bookinfo/ratings"),
            token.rsplit('.').next().unwrap()
        );
        assert_eq!(
            issuer.verify(&forged),
            Err(AuthError::Invalid("bad signature"))
        );
        for garbage in ["", "fm1", "fm1..", "fm1.zz.zz", "x.y.z.w"] {
            assert!(issuer.verify(garbage).is_err(), "{garbage:?}");
        }
    }

    #[test]
    fn tokens_survive_a_restart_but_not_a_new_key() {
        let dir = tempfile::tempdir().unwrap();
        let token = TokenIssuer::load_or_create(dir.path())
            .unwrap()
            .issue(&Identity::new("a", "b"));
        let reloaded = TokenIssuer::load_or_create(dir.path()).unwrap();
        assert_eq!(reloaded.verify(&token), Ok(Identity::new("a", "b")));
        let other = tempfile::tempdir().unwrap();
        let stranger = TokenIssuer::load_or_create(other.path()).unwrap();
        assert!(stranger.verify(&token).is_err());
    }
}
