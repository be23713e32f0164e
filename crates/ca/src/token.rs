//! meshd's own workload tokens (local mode):
//! `fm2.<hex of "namespace/sa">.<expiry, unix seconds>.<id>.<hex HMAC of what precedes>`,
//! signed with a key kept beside the CA's keys. Stateless, so a restarted meshd accepts
//! the tokens it issued before, until they expire or their id is revoked (one id per
//! line in the CA directory's `revoked-tokens`, read again whenever it changes).
//! Whoever holds a token may act as its identity, so it is handed to one workload only
//! (a 0600 file) and never logged; its id may be.

use crate::auth::{AuthError, Authenticator, Origin};
use crate::identity::Identity;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const PREFIX: &str = "fm2";
/// The first format, whose tokens never expired: refused, with the reason.
const EXPIRED_FORMAT: &str = "fm1";
const KEY_FILE: &str = "token-key";
/// The revoked tokens' ids, one per line (`#` starts a comment).
pub const REVOKED_FILE: &str = "revoked-tokens";
/// The longest a token may live: a lost one stops working within this.
pub const MAX_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// A token and what may be said of it in the open.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// The secret itself.
    pub token: String,
    /// Its id, which `revoked-tokens` names to revoke it.
    pub id: String,
    /// When it stops proving anything.
    pub expires: SystemTime,
}

/// Issues and checks meshd's own tokens (local mode): HMAC-signed identities.
pub struct TokenIssuer {
    key: hmac::Key,
    revoked: Revocations,
}

impl TokenIssuer {
    /// Loads the signing key from `dir`, creating it (0600) on first use; the revoked
    /// ids are read from `dir`'s `revoked-tokens`.
    pub fn load_or_create(dir: &Path) -> std::io::Result<TokenIssuer> {
        let path = dir.join(KEY_FILE);
        let secret = crate::files::read_or_create_secret(&path, 32, |random| random.to_vec())?;
        Ok(TokenIssuer {
            key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
            revoked: Revocations::new(dir.join(REVOKED_FILE)),
        })
    }

    /// A token that proves `identity` to this meshd for `lifetime` (at most
    /// [`MAX_LIFETIME`]).
    pub fn issue(&self, identity: &Identity, lifetime: Duration) -> IssuedToken {
        let expires = SystemTime::now() + lifetime.min(MAX_LIFETIME);
        let mut id = [0u8; 8];
        SystemRandom::new()
            .fill(&mut id)
            .expect("the system's random source works");
        let id = hex::encode(id);
        let subject = hex::encode(format!(
            "{}/{}",
            identity.namespace, identity.service_account
        ));
        let signed = format!("{PREFIX}.{subject}.{}.{id}", unix_seconds(expires));
        let tag = hmac::sign(&self.key, signed.as_bytes());
        IssuedToken {
            token: format!("{signed}.{}", hex::encode(tag.as_ref())),
            id,
            expires,
        }
    }

    /// Revokes the token `id` (as [`IssuedToken::id`] names it): every meshd sharing this
    /// CA directory refuses it from its next use on.
    pub fn revoke(&self, id: &str) -> std::io::Result<()> {
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{id:?} is no token id (hex, as `fleetmesh token` printed it)"),
            ));
        }
        let path = &self.revoked.path;
        // A write cut short (a full disk) leaves a partial line: end it first, so that
        // this id is a line of its own.
        let cut_short = std::fs::read(path).is_ok_and(|b| b.last().is_some_and(|c| *c != b'\n'));
        let line = format!("{}{id}\n", if cut_short { "\n" } else { "" });
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut file| {
                file.write_all(line.as_bytes())?;
                file.sync_all()
            });
        appended.map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
    }

    /// Whether `token` has the form of meshd's own tokens (a Kubernetes service-account
    /// JWT never does).
    pub fn is_ours(token: &str) -> bool {
        in_format(token, PREFIX) || in_format(token, EXPIRED_FORMAT)
    }

    /// The identity `token` proves, if this issuer signed it, it has not expired and its
    /// id is not revoked.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        if in_format(token, EXPIRED_FORMAT) {
            return Err(AuthError::Refused(
                "an fm1 token never expires and is no longer accepted: issue a new one with `fleetmesh token`".into(),
            ));
        }
        let (signed, tag) = token
            .rsplit_once('.')
            .ok_or(AuthError::Invalid("not a fleetmesh token"))?;
        let mut parts = signed.split('.');
        let (Some(PREFIX), Some(subject), Some(expiry), Some(id), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(AuthError::Invalid("not a fleetmesh token"));
        };
        let tag = hex::decode(tag).map_err(|_| AuthError::Invalid("malformed signature"))?;
        hmac::verify(&self.key, signed.as_bytes(), &tag)
            .map_err(|_| AuthError::Invalid("bad signature"))?;
        let expiry: u64 = expiry
            .parse()
            .map_err(|_| AuthError::Invalid("malformed expiry"))?;
        if unix_seconds(SystemTime::now()) >= expiry {
            return Err(AuthError::Refused(format!("token {id} has expired")));
        }
        if self.revoked.contains(id) {
            return Err(AuthError::Refused(format!("token {id} is revoked")));
        }
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
    fn authenticate<'a>(
        &'a self,
        token: &'a str,
        _: Origin,
    ) -> BoxFuture<'a, Result<Identity, AuthError>> {
        Box::pin(async move { self.verify(token) })
    }
}

/// The revoked ids, read again when the file changes: its modification time (whose
/// granularity is coarse) or its length (every revocation appends).
struct Revocations {
    path: PathBuf,
    read: Mutex<ReadIds>,
}

/// The ids as last read, and the file's (modification time, length) then.
#[derive(Default)]
struct ReadIds {
    version: Option<(SystemTime, u64)>,
    ids: BTreeSet<String>,
}

impl Revocations {
    fn new(path: PathBuf) -> Revocations {
        Revocations {
            path,
            read: Mutex::default(),
        }
    }

    fn contains(&self, id: &str) -> bool {
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| Ok((m.modified()?, m.len())))
            .ok();
        let mut read = self.read.lock();
        if read.version != modified {
            let bytes = match std::fs::read(&self.path) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(error) => {
                    // Unreadable now: the ids read before stay revoked (and it is read
                    // again next time).
                    tracing::warn!(path = %self.path.display(), %error, "cannot read the revoked tokens");
                    return read.ids.contains(id);
                }
            };
            let ids = String::from_utf8_lossy(&bytes)
                .lines()
                .map(|line| line.split('#').next().unwrap_or_default().trim())
                .filter(|line| !line.is_empty())
                .map(str::to_string)
                .collect();
            *read = ReadIds {
                version: modified,
                ids,
            };
        }
        read.ids.contains(id)
    }
}

/// Whether `token` starts with the format tag `format` (`fm2.`).
fn in_format(token: &str, format: &str) -> bool {
    token
        .strip_prefix(format)
        .is_some_and(|rest| rest.starts_with('.'))
}

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    #[test]
    fn a_token_proves_its_identity_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let issuer = TokenIssuer::load_or_create(dir.path()).unwrap();
        let reviews = Identity::new("bookinfo", "reviews");
        let issued = issuer.issue(&reviews, DAY);
        assert_eq!(issuer.verify(&issued.token), Ok(reviews));

        // Another subject, or a later expiry, under the same signature is refused.
        let (_, rest) = issued.token.split_once('.').unwrap();
        let (_, rest) = rest.split_once('.').unwrap();
        let forged = format!("fm2.{}.{rest}", hex::encode("bookinfo/ratings"));
        assert_eq!(
            issuer.verify(&forged),
            Err(AuthError::Invalid("bad signature"))
        );
        let parts: Vec<&str> = issued.token.split('.').collect();
        let later = format!(
            "fm2.{}.{}.{}.{}",
            parts[1],
            parts[2].parse::<u64>().unwrap() + 1000,
            parts[3],
            parts[4]
        );
        assert_eq!(
            issuer.verify(&later),
            Err(AuthError::Invalid("bad signature"))
        );
        for garbage in [
            "",
            "fm2",
            "fm2....",
            "fm2.zz.1.zz.zz",
            "x.y.z.w.v",
            "fm2.a.b.c.d.e",
        ] {
            assert!(issuer.verify(garbage).is_err(), "{garbage:?}");
        }
    }

    #[test]
    fn a_revocation_after_a_write_cut_short_is_a_line_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let issuer = TokenIssuer::load_or_create(dir.path()).unwrap();
        let token = issuer.issue(&Identity::new("a", "b"), DAY);
        // What a full disk left of an earlier revocation: part of an id, no newline.
        std::fs::write(dir.path().join(REVOKED_FILE), "0a1b").unwrap();
        issuer.revoke(&token.id).unwrap();
        assert!(issuer.verify(&token.token).is_err(), "revoked");
        let text = std::fs::read_to_string(dir.path().join(REVOKED_FILE)).unwrap();
        assert_eq!(text, format!("0a1b\n{}\n", token.id));
    }

    #[test]
    fn tokens_expire_and_are_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let issuer = TokenIssuer::load_or_create(dir.path()).unwrap();
        let identity = Identity::new("a", "b");
        let expired = issuer.issue(&identity, Duration::ZERO);
        assert_eq!(
            issuer.verify(&expired.token),
            Err(AuthError::Refused(format!(
                "token {} has expired",
                expired.id
            )))
        );
        let capped = issuer.issue(&identity, MAX_LIFETIME * 10);
        assert!(capped.expires <= SystemTime::now() + MAX_LIFETIME);

        let kept = issuer.issue(&identity, DAY);
        let revoked = issuer.issue(&identity, DAY);
        assert!(issuer.verify(&revoked.token).is_ok());
        issuer.revoke(&revoked.id).unwrap();
        assert_eq!(
            issuer.verify(&revoked.token),
            Err(AuthError::Refused(format!(
                "token {} is revoked",
                revoked.id
            )))
        );
        assert!(issuer.verify(&kept.token).is_ok(), "only that one");
        assert!(issuer.revoke("not-an-id").is_err());
    }

    #[test]
    fn first_format_tokens_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let issuer = TokenIssuer::load_or_create(dir.path()).unwrap();
        let error = issuer.verify("fm1.612f62.00").unwrap_err();
        assert!(error.to_string().contains("fleetmesh token"), "{error}");
        assert!(TokenIssuer::is_ours("fm1.612f62.00"));
    }

    #[test]
    fn tokens_survive_a_restart_but_not_a_new_key() {
        let dir = tempfile::tempdir().unwrap();
        let token = TokenIssuer::load_or_create(dir.path())
            .unwrap()
            .issue(&Identity::new("a", "b"), DAY)
            .token;
        let reloaded = TokenIssuer::load_or_create(dir.path()).unwrap();
        assert_eq!(reloaded.verify(&token), Ok(Identity::new("a", "b")));
        let other = tempfile::tempdir().unwrap();
        let stranger = TokenIssuer::load_or_create(other.path()).unwrap();
        assert!(stranger.verify(&token).is_err());
    }
}
