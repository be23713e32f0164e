//! JWKS documents named by RequestAuthentication `jwksUri`s, fetched by meshd (one fetch
//! per URI for the whole mesh, never by each proxy) and refreshed periodically. Until a
//! URI's keys arrive, proxies get keys that validate nothing, so tokens of that issuer
//! are refused rather than trusted unchecked.
//!
//! A `jwksUri` is tenant-written: meshd fetches it only from where `--tenant-egress-deny`
//! allows (the host resolved once and the connection pinned to the checked address), and
//! follows no redirect (which could point anywhere). It reads at most 1 MiB, keeps only a
//! document Envoy can use (`fleetmesh_api::security::jwks`), and stops fetching a URI
//! once no RequestAuthentication names it. A fetch waits as long as the rules naming the
//! URI say (`timeout`, Istio's default 5 s), never more than 30 s.

use fleetmesh_kube::egress::EgressPolicy;
use fleetmesh_model::trigger::{Origin, Trigger};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

const REFRESH: Duration = Duration::from_secs(600);
const RETRY: Duration = Duration::from_secs(5);
const MAX_BYTES: usize = 1 << 20;
/// How long a fetch waits when no rule says (Istio's `JwtRule.timeout` default).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a rule may make a fetch wait: a URI that never answers holds a fetcher of
/// the shared control plane no longer than this.
const MAX_TIMEOUT: Duration = Duration::from_secs(30);

pub struct JwksCache {
    /// By URI: its fetcher, and the last good document once there is one.
    fetched: Mutex<BTreeMap<String, Fetched>>,
    /// Signals a rebuild when keys arrive or change.
    changes: UnboundedSender<Trigger>,
    /// Where tenant-written URIs may point.
    egress: EgressPolicy,
}

/// One URI's fetcher and what it fetched.
struct Fetched {
    jwks: Option<String>,
    /// How long its next fetch may wait.
    timeout: Duration,
    /// Stops its fetcher once no RequestAuthentication names the URI.
    stop: CancellationToken,
}

impl JwksCache {
    pub fn new(changes: UnboundedSender<Trigger>, egress: EgressPolicy) -> Arc<JwksCache> {
        Arc::new(JwksCache {
            fetched: Mutex::default(),
            changes,
            egress,
        })
    }

    /// The keys fetched so far for `uris`, every URI the mesh's config names now (with
    /// the fetch timeout its rules give): starts a fetcher for each URI seen first, and
    /// stops those of URIs no longer named.
    pub fn resolve<'a>(
        self: &Arc<Self>,
        uris: impl IntoIterator<Item = (&'a str, Option<Duration>)>,
    ) -> BTreeMap<String, String> {
        let mut fetched = self.fetched.lock();
        let mut named = BTreeMap::new();
        for (uri, timeout) in uris {
            let entry = fetched.entry(uri.to_string()).or_insert_with(|| {
                let stop = CancellationToken::new();
                tokio::spawn(self.clone().keep_fetching(uri.to_string(), stop.clone()));
                Fetched {
                    jwks: None,
                    timeout: DEFAULT_TIMEOUT,
                    stop,
                }
            });
            entry.timeout = timeout.unwrap_or(DEFAULT_TIMEOUT).min(MAX_TIMEOUT);
            named.insert(uri.to_string(), entry.jwks.clone());
        }
        fetched.retain(|uri, entry| {
            let keep = named.contains_key(uri);
            if !keep {
                entry.stop.cancel();
            }
            keep
        });
        named
            .into_iter()
            .filter_map(|(uri, jwks)| Some((uri, jwks?)))
            .collect()
    }

    async fn keep_fetching(self: Arc<Self>, uri: String, stop: CancellationToken) {
        loop {
            let Some(timeout) = self.fetched.lock().get(&uri).map(|f| f.timeout) else {
                return;
            };
            let fetched = tokio::select! {
                fetched = self.fetch(&uri, timeout) => fetched,
                () = stop.cancelled() => return,
            };
            let wait = match fetched {
                Ok(jwks) => {
                    let mut fetched = self.fetched.lock();
                    let Some(entry) = fetched.get_mut(&uri).filter(|_| !stop.is_cancelled()) else {
                        return;
                    };
                    if entry.jwks.as_ref() != Some(&jwks) {
                        entry.jwks = Some(jwks);
                        tracing::info!(%uri, "JWKS fetched");
                        let _ = self.changes.send(Trigger::update(Origin::Jwks));
                    }
                    REFRESH
                }
                Err(error) => {
                    tracing::warn!(%uri, %error, retry_in = ?RETRY, "cannot fetch JWKS; tokens of its issuer are refused until it can");
                    RETRY
                }
            };
            if self.changes.is_closed() {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = stop.cancelled() => return,
            }
        }
    }

    async fn fetch(&self, uri: &str, timeout: Duration) -> Result<String, String> {
        let url = reqwest::Url::parse(uri).map_err(|e| e.to_string())?;
        let host = url.host_str().ok_or("no host")?.to_string();
        let port = url.port_or_known_default().ok_or("no port")?;
        let address = self
            .egress
            .resolve(&host, port)
            .await
            .map_err(|e| e.to_string())?;
        // Pinned to the checked address; TLS still verifies the host name.
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .resolve(&host, address)
            .build()
            .map_err(|e| e.to_string())?;
        let failed = |e: reqwest::Error| match e.is_timeout() {
            true => format!("no answer within {timeout:?}"),
            false => e.to_string(),
        };
        let mut response = client.get(url).send().await.map_err(failed)?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
        // Read no further than the limit, whatever the server says or sends.
        let too_big = || format!("more than {MAX_BYTES} bytes");
        if response
            .content_length()
            .is_some_and(|n| n > MAX_BYTES as u64)
        {
            return Err(too_big());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(failed)? {
            if body.len() + chunk.len() > MAX_BYTES {
                return Err(too_big());
            }
            body.extend_from_slice(&chunk);
        }
        let text = String::from_utf8(body).map_err(|_| "not UTF-8 text".to_string())?;
        fleetmesh_api::security::jwks::check(&text).map_err(|e| e.to_string())?;
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_uri_into_a_denied_network_is_not_fetched() {
        let (changes, _) = tokio::sync::mpsc::unbounded_channel();
        let policy = EgressPolicy::denying(&["127.0.0.0/8".into(), "::1/128".into()]).unwrap();
        let cache = JwksCache::new(changes, policy);
        for uri in [
            "http://169.254.169.254/latest/meta-data",
            "http://127.0.0.1:15014/v1/projects",
            "https://localhost/jwks",
        ] {
            let error = cache.fetch(uri, DEFAULT_TIMEOUT).await.unwrap_err();
            assert!(error.contains("tenants may not reach"), "{uri}: {error}");
        }
    }

    #[tokio::test]
    async fn by_default_keys_are_not_fetched_from_private_networks() {
        let config = <crate::config::MeshdConfig as clap::Parser>::parse_from(["meshd"]);
        let tenant = EgressPolicy::denying(&config.tenant_egress_deny).unwrap();
        let policy = crate::ingest::jwks_egress(&config, &tenant);
        for private in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "fd00::1",
        ] {
            assert!(policy.check(private.parse().unwrap()).is_err(), "{private}");
            assert!(
                tenant.check(private.parse().unwrap()).is_ok(),
                "{private}: API servers may be private"
            );
        }
        assert!(policy.check("203.0.113.7".parse().unwrap()).is_ok());
        let (changes, _) = tokio::sync::mpsc::unbounded_channel();
        let cache = JwksCache::new(changes, policy);
        let error = cache
            .fetch("https://10.0.0.1/jwks", DEFAULT_TIMEOUT)
            .await
            .unwrap_err();
        assert!(error.contains("tenants may not reach"), "{error}");
    }

    /// A JWKS server on loopback that answers after `delay`.
    async fn slow_jwks_server(delay: Duration) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut request = [0u8; 1024];
                    let _ = stream.read(&mut request).await;
                    tokio::time::sleep(delay).await;
                    let body = r#"{"keys":[{"kty":"RSA","kid":"a","n":"0vx7agoebGcQSuuPiLJXZpt","e":"AQAB"}]}"#;
                    let response = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                });
            }
        });
        format!("http://{address}/jwks")
    }

    #[tokio::test]
    async fn a_fetch_waits_as_long_as_its_rules_say_and_no_longer() {
        let (changes, _) = tokio::sync::mpsc::unbounded_channel();
        let cache = JwksCache::new(changes, EgressPolicy::denying(&[]).unwrap());
        let uri = slow_jwks_server(Duration::from_millis(800)).await;
        let error = cache
            .fetch(&uri, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert_eq!(error, "no answer within 200ms");
        let jwks = cache.fetch(&uri, Duration::from_secs(5)).await.unwrap();
        assert!(jwks.contains("\"kid\":\"a\""), "{jwks}");
        // Istio's default when no rule says, and never more than the cap.
        let timeout = |given| {
            cache.resolve([(uri.as_str(), given)]);
            cache.fetched.lock()[&uri].timeout
        };
        assert_eq!(timeout(None), DEFAULT_TIMEOUT);
        assert_eq!(
            timeout(Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
        assert_eq!(timeout(Some(Duration::from_secs(3600))), MAX_TIMEOUT);
    }

    #[tokio::test]
    async fn a_uri_no_longer_named_stops_being_fetched() {
        let (changes, _) = tokio::sync::mpsc::unbounded_channel();
        // Denied addresses, so that nothing is fetched (nor resolved).
        let policy = EgressPolicy::denying(&["127.0.0.0/8".into()]).unwrap();
        let cache = JwksCache::new(changes, policy);
        let (a, b) = ("https://127.0.0.1:9/a", "https://127.0.0.1:9/b");
        cache.resolve([(a, None), (b, None)]);
        let stop_a = cache.fetched.lock()[a].stop.clone();
        cache.resolve([(b, None)]);
        assert!(stop_a.is_cancelled(), "a's fetcher is stopped");
        assert_eq!(cache.fetched.lock().keys().collect::<Vec<_>>(), [b]);
        cache.resolve(std::iter::empty());
        assert!(cache.fetched.lock().is_empty());
    }
}
