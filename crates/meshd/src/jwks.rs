//! JWKS documents named by RequestAuthentication `jwksUri`s, fetched by meshd (one fetch
//! per URI for the whole mesh, never by each proxy) and refreshed periodically. Until a
//! URI's keys arrive, proxies get keys that validate nothing, so tokens of that issuer
//! are refused rather than trusted unchecked.
//!
//! A `jwksUri` is tenant-written: meshd fetches it only from where `--tenant-egress-deny`
//! allows (the host resolved once and the connection pinned to the checked address), and
//! follows no redirect (which could point anywhere).

use fleetmesh_kube::egress::EgressPolicy;
use fleetmesh_model::trigger::{Origin, Trigger};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;

const REFRESH: Duration = Duration::from_secs(600);
const RETRY: Duration = Duration::from_secs(5);
const MAX_BYTES: usize = 1 << 20;

pub struct JwksCache {
    /// By URI: the last good document, once there is one.
    fetched: Mutex<BTreeMap<String, Option<String>>>,
    /// Signals a rebuild when keys arrive or change.
    changes: UnboundedSender<Trigger>,
    /// Where tenant-written URIs may point.
    egress: EgressPolicy,
}

impl JwksCache {
    pub fn new(changes: UnboundedSender<Trigger>, egress: EgressPolicy) -> Arc<JwksCache> {
        Arc::new(JwksCache {
            fetched: Mutex::default(),
            changes,
            egress,
        })
    }

    /// The keys fetched so far for `uris`; starts a fetcher for each URI seen first.
    pub fn resolve<'a>(
        self: &Arc<Self>,
        uris: impl IntoIterator<Item = &'a str>,
    ) -> BTreeMap<String, String> {
        let mut fetched = self.fetched.lock();
        let mut known = BTreeMap::new();
        for uri in uris {
            match fetched.get(uri) {
                Some(Some(jwks)) => {
                    known.insert(uri.to_string(), jwks.clone());
                }
                Some(None) => {}
                None => {
                    fetched.insert(uri.to_string(), None);
                    tokio::spawn(self.clone().keep_fetching(uri.to_string()));
                }
            }
        }
        known
    }

    async fn keep_fetching(self: Arc<Self>, uri: String) {
        loop {
            let wait = match self.fetch(&uri).await {
                Ok(jwks) => {
                    let mut fetched = self.fetched.lock();
                    let previous = fetched.insert(uri.clone(), Some(jwks.clone()));
                    if previous != Some(Some(jwks)) {
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
            tokio::time::sleep(wait).await;
        }
    }

    async fn fetch(&self, uri: &str) -> Result<String, String> {
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
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .resolve(&host, address)
            .build()
            .map_err(|e| e.to_string())?;
        let response = client.get(url).send().await.map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
        let body = response.bytes().await.map_err(|e| e.to_string())?;
        if body.len() > MAX_BYTES {
            return Err(format!("{} bytes; the limit is {MAX_BYTES}", body.len()));
        }
        let document: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| format!("not JSON: {e}"))?;
        if !document["keys"].is_array() {
            return Err("not a JWKS (no \"keys\" array)".into());
        }
        Ok(String::from_utf8_lossy(&body).into_owned())
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
            let error = cache.fetch(uri).await.unwrap_err();
            assert!(error.contains("tenants may not reach"), "{uri}: {error}");
        }
    }
}
