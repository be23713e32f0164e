//! The workload's certificate: the agent makes a key and CSR locally (the key never leaves
//! the workload), has meshd's CA sign it, and renews it at half its remaining lifetime. A
//! failed renewal keeps the valid certificate and retries with backoff.

use crate::token::TokenFile;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tonic::transport::Channel;

/// What Envoy gets over SDS: `default` (chain and key) and `ROOTCA` (the trust bundle).
pub struct WorkloadCertificate {
    /// The workload certificate then any intermediates, PEM.
    pub chain: String,
    /// A secret: never logged.
    pub key: String,
    /// Every root the workload trusts, PEM.
    pub roots: String,
    pub not_after: SystemTime,
}

impl std::fmt::Debug for WorkloadCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkloadCertificate")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
pub struct CertificateOptions {
    /// Proves the workload's identity to the CA; read again for every CSR.
    pub token: TokenFile,
    /// `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`.
    pub spiffe_id: String,
    pub ttl: Duration,
    /// The cluster the workload runs in, told to meshd (whose API server reviews the
    /// token).
    pub cluster: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error("making the key and CSR: {0}")]
    Csr(#[from] rcgen::Error),
    #[error("{0}")]
    Token(#[from] std::io::Error),
    #[error("meshd's CA refused: {0}")]
    Refused(#[from] tonic::Status),
    #[error("meshd's CA answered with {0}")]
    BadResponse(String),
}

/// Gets a fresh certificate from the CA.
pub async fn fetch(
    channel: Channel,
    options: &CertificateOptions,
) -> Result<WorkloadCertificate, CertificateError> {
    let token = options.token.read()?;
    let request = fleetmesh_ca::csr::generate(&options.spiffe_id)?;
    let chain = fleetmesh_ca::client::create_certificate(
        channel,
        &token,
        options.cluster.as_deref(),
        request.csr_pem,
        options.ttl,
    )
    .await?;
    let Some((roots, certificates)) = chain.split_last() else {
        return Err(CertificateError::BadResponse("an empty chain".into()));
    };
    let leaf = certificates
        .first()
        .ok_or_else(|| CertificateError::BadResponse("no workload certificate".into()))?;
    Ok(WorkloadCertificate {
        chain: certificates.concat(),
        key: request.key_pem,
        roots: roots.clone(),
        not_after: fleetmesh_ca::inspect::certificates(leaf)
            .map_err(CertificateError::BadResponse)?
            .first()
            .ok_or_else(|| CertificateError::BadResponse("no workload certificate".into()))?
            .not_after,
    })
}

/// The workload's certificate as it changes: `None` until the CA first answers.
pub type Certificates = watch::Receiver<Option<Arc<WorkloadCertificate>>>;

/// Fetches the first certificate from meshd's CA at `channel` (retrying until it
/// answers) and keeps it fresh, in a task that runs until aborted.
pub fn keep_fresh(
    channel: Channel,
    options: CertificateOptions,
) -> (Certificates, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(None);
    let task = tokio::spawn(async move {
        let mut current: Option<Arc<WorkloadCertificate>> = None;
        loop {
            if let Some(current) = &current {
                tokio::time::sleep(renew_after(current.not_after, SystemTime::now())).await;
            }
            let fresh = Arc::new(fetch_with_retry(&channel, &options, current.as_deref()).await);
            tracing::info!(identity = %options.spiffe_id, not_after = ?fresh.not_after, "workload certificate issued");
            current = Some(fresh.clone());
            tx.send_replace(Some(fresh));
        }
    });
    (rx, task)
}

/// Half of what is left of the certificate's life, as Istio's agent renews.
pub fn renew_after(not_after: SystemTime, now: SystemTime) -> Duration {
    not_after.duration_since(now).unwrap_or_default() / 2
}

/// Retries with exponential backoff (100 ms doubling to 10 s) until the CA answers; the
/// current certificate, if any, stays in use meanwhile.
async fn fetch_with_retry(
    channel: &Channel,
    options: &CertificateOptions,
    current: Option<&WorkloadCertificate>,
) -> WorkloadCertificate {
    let mut backoff = Duration::from_millis(100);
    loop {
        match fetch(channel.clone(), options).await {
            Ok(certificate) => return certificate,
            Err(error) => {
                let expires_in = current.map(|c| {
                    c.not_after
                        .duration_since(SystemTime::now())
                        .unwrap_or_default()
                });
                tracing::warn!(%error, ?expires_in, retry_in = ?backoff, "getting a workload certificate failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renews_at_half_the_remaining_lifetime() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        assert_eq!(
            renew_after(now + Duration::from_secs(20), now),
            Duration::from_secs(10)
        );
        assert_eq!(
            renew_after(now - Duration::from_secs(1), now),
            Duration::ZERO
        );
    }
}
