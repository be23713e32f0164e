//! The CA directory, watched: a changed file (a root rotation step, new plug-in certs)
//! replaces the CA meshd signs with. A directory that does not load (a half-written
//! step, a key that is not the certificate's) is logged and the current CA stays.

use crate::config::MeshdConfig;
use fleetmesh_ca::CertificateAuthority;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Files change in bursts; the directory is read once they settle.
const SETTLE: Duration = Duration::from_millis(200);

/// Watches `config.ca_dir` until the returned watcher is dropped.
pub fn watch(
    config: MeshdConfig,
    authority: watch::Sender<Arc<CertificateAuthority>>,
) -> anyhow::Result<notify::RecommendedWatcher> {
    let (changes_tx, mut changes) = tokio::sync::mpsc::unbounded_channel();
    let watcher = crate::local::watch(&config.ca_dir, changes_tx)?;
    tokio::spawn(async move {
        while changes.recv().await.is_some() {
            tokio::time::sleep(SETTLE).await;
            while changes.try_recv().is_ok() {}
            match CertificateAuthority::load_or_create(
                &config.ca_dir,
                &config.trust_domain,
                config.max_cert_ttl,
            ) {
                Ok(loaded) => {
                    if loaded.roots() != authority.borrow().roots() {
                        tracing::info!(
                            roots = pem_count(loaded.roots()),
                            "mesh trust bundle changed"
                        );
                    }
                    authority.send_replace(Arc::new(loaded));
                }
                Err(error) => {
                    tracing::warn!(%error, "CA files changed but do not load; still signing with the previous CA")
                }
            }
        }
    });
    Ok(watcher)
}

fn pem_count(text: &str) -> usize {
    text.matches("-----BEGIN CERTIFICATE-----").count()
}
