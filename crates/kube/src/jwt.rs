//! What a Kubernetes service-account token says about its own lifetime: its `iat` and
//! `exp` claims, read without checking its signature. Only ever used to trust a token
//! for less time (a cache) or to renew it sooner, never to accept one.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// When the token was issued and when it expires; `None` when it is not a JWT carrying
/// both (a static token, say).
pub fn lifetime(token: &str) -> Option<(SystemTime, SystemTime)> {
    use base64::Engine;
    #[derive(serde::Deserialize)]
    struct Times {
        iat: u64,
        exp: u64,
    }
    let payload = token.trim().split('.').nth(1)?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let times: Times = serde_json::from_slice(&json).ok()?;
    let at = |seconds| UNIX_EPOCH.checked_add(Duration::from_secs(seconds));
    Some((at(times.iat)?, at(times.exp)?))
}

#[cfg(test)]
pub(crate) fn for_test(payload: &str) -> String {
    use base64::Engine;
    let encode = |text: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text);
    format!("{}.{}.sig", encode(r#"{"alg":"RS256"}"#), encode(payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tokens_times_are_read_and_anything_else_is_none() {
        let token = for_test(r#"{"iat":1000,"exp":4600,"sub":"x"}"#);
        let (issued, expires) = lifetime(&token).unwrap();
        assert_eq!(issued, UNIX_EPOCH + Duration::from_secs(1000));
        assert_eq!(expires, UNIX_EPOCH + Duration::from_secs(4600));
        let no_iat = for_test(r#"{"exp":5}"#);
        let not_json = for_test("not json");
        for other in ["", "a.b.c", "static-token", &no_iat, &not_json] {
            assert_eq!(lifetime(other), None, "{other}");
        }
    }
}
