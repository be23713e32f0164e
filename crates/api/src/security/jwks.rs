//! JSON Web Key Sets as Envoy's JWT filter reads them: a document meshd fetched from a
//! `jwksUri` is checked here before any proxy gets it, so that a server answering with
//! something else (an error page, a truncated body, keys Envoy cannot use) leaves the
//! proxies with the keys they had rather than none.

use serde::Deserialize;

/// Keys one set may hold (issuers publish a handful).
pub const MAX_KEYS: usize = 256;

/// Why a document is not a usable key set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    /// The document is not a JSON key set (the reason from the parser).
    #[error("not a JSON key set: {0}")]
    NotJwks(String),
    /// No key has a type Envoy can use.
    #[error("no key Envoy can use (kty RSA, EC, oct or OKP)")]
    NoUsableKey,
    /// More keys than [`MAX_KEYS`].
    #[error("{0} keys; at most {MAX_KEYS}")]
    TooManyKeys(usize),
    /// One key cannot be used.
    #[error("keys[{index}] ({kty}): {reason}")]
    BadKey {
        /// Its position in `keys`.
        index: usize,
        /// Its key type.
        kty: String,
        /// What is wrong with it.
        reason: String,
    },
}

#[derive(Deserialize)]
struct Document {
    keys: Vec<Key>,
}

/// The members of a key Envoy needs (others, such as `kid` or `x5c`, are left alone).
#[derive(Deserialize)]
struct Key {
    kty: String,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
    k: Option<String>,
}

/// Checks that `text` is a key set with at least one key Envoy can use and none it would
/// fail on; returns how many keys it holds.
pub fn check(text: &str) -> Result<usize, JwksError> {
    let document: Document =
        serde_json::from_str(text).map_err(|e| JwksError::NotJwks(e.to_string()))?;
    if document.keys.len() > MAX_KEYS {
        return Err(JwksError::TooManyKeys(document.keys.len()));
    }
    let mut usable = 0;
    for (index, key) in document.keys.iter().enumerate() {
        let bad = |reason: String| JwksError::BadKey {
            index,
            kty: key.kty.clone(),
            reason,
        };
        let members: &[(&Option<String>, &'static str)] = match key.kty.as_str() {
            "RSA" => &[(&key.n, "n"), (&key.e, "e")],
            "EC" => {
                let curve = key.crv.as_deref();
                if !matches!(curve, Some("P-256" | "P-384" | "P-521")) {
                    return Err(bad("crv must be P-256, P-384 or P-521".into()));
                }
                &[(&key.x, "x"), (&key.y, "y")]
            }
            "oct" => &[(&key.k, "k")],
            "OKP" => {
                if key.crv.as_deref() != Some("Ed25519") {
                    return Err(bad("crv must be Ed25519".into()));
                }
                &[(&key.x, "x")]
            }
            // Other key types are skipped by Envoy, and so here.
            _ => continue,
        };
        for (value, name) in members {
            match value {
                None => return Err(bad(format!("{name} is missing"))),
                Some(value) if !base64url(value) => {
                    return Err(bad(format!("{name} is not base64url")));
                }
                Some(_) => {}
            }
        }
        usable += 1;
    }
    if usable == 0 {
        return Err(JwksError::NoUsableKey);
    }
    Ok(document.keys.len())
}

/// Whether `value` decodes as base64url (padding optional), and is not empty.
fn base64url(value: &str) -> bool {
    let unpadded = value.trim_end_matches('=');
    !unpadded.is_empty()
        && value.len() - unpadded.len() <= 2
        && unpadded.len() % 4 != 1
        && unpadded
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSA: &str = r#"{"kty":"RSA","kid":"a","n":"0vx7agoebGcQSuuPiLJXZpt","e":"AQAB"}"#;

    #[test]
    fn a_set_with_a_usable_key_passes() {
        assert_eq!(check(&format!(r#"{{"keys":[{RSA}]}}"#)), Ok(1));
        let mixed = format!(
            r#"{{"keys":[{RSA},{{"kty":"EC","crv":"P-256","x":"f83OJ3D2","y":"x_FEzRu9"}},{{"kty":"future"}}]}}"#
        );
        assert_eq!(check(&mixed), Ok(3), "unknown kinds are skipped");
    }

    #[test]
    fn anything_else_is_refused_with_the_reason() {
        for (text, expected) in [
            ("<html>502</html>", "not a JSON key set"),
            (r#"{"keys":[{"kty":"RSA","n":"AB"#, "not a JSON key set"),
            (r#"{"keys":[]}"#, "no key Envoy can use"),
            (r#"{"keys":[{"kty":"future"}]}"#, "no key Envoy can use"),
            (
                r#"{"keys":[{"kty":"RSA","e":"AQAB"}]}"#,
                "keys[0] (RSA): n is missing",
            ),
            (
                r#"{"keys":[{"kty":"RSA","n":"a+b/","e":"AQAB"}]}"#,
                "n is not base64url",
            ),
            (
                r#"{"keys":[{"kty":"EC","crv":"P-999","x":"AA","y":"AA"}]}"#,
                "crv must be",
            ),
            (r#"{"keys":[{"kty":"oct","k":"A"}]}"#, "k is not base64url"),
        ] {
            let error = check(text).unwrap_err().to_string();
            assert!(error.contains(expected), "{text}: {error}");
        }
        let many = format!(r#"{{"keys":[{}]}}"#, vec![RSA; MAX_KEYS + 1].join(","));
        assert_eq!(check(&many), Err(JwksError::TooManyKeys(MAX_KEYS + 1)));
    }
}
