//! JWKS documents named by RequestAuthentication `jwksUri`s, fetched by meshd (one fetch
//! per URI for the whole mesh, never by each proxy) and refreshed periodically. Until a
//! URI's keys arrive, proxies get keys that validate nothing, so tokens of that issuer
//! are refused rather than trusted unchecked.

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
    changes: UnboundedSender<()>,
    client: reqwest::Client,
}

impl JwksCache {
    pub fn new(changes: UnboundedSender<()>) -> Arc<JwksCache> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Arc::new(JwksCache {
            fetched: Mutex::default(),
            changes,
            client,
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
                        let _ = self.changes.send(());
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
        let response = self
            .client
            .get(uri)
            .send()
            .await
            .map_err(|e| e.to_string())?;
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
