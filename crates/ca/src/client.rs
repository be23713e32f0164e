//! The caller's side of CreateCertificate, as the agent uses it.

use crate::proto::IstioCertificateRequest;
use crate::proto::istio_certificate_service_client::IstioCertificateServiceClient;
use std::time::Duration;
use tonic::transport::Channel;

/// Asks the CA at `channel` to sign `csr` (PEM) for `ttl`, proving the caller with
/// `token` (of `cluster`, when the caller names its cluster as Istio's agent does);
/// returns the chain (workload certificate first, trust bundle last).
pub async fn create_certificate(
    channel: Channel,
    token: &str,
    cluster: Option<&str>,
    csr: String,
    ttl: Duration,
) -> Result<Vec<String>, tonic::Status> {
    let mut request = tonic::Request::new(IstioCertificateRequest {
        csr,
        validity_duration: ttl.as_secs() as i64,
        metadata: None,
    });
    let value = format!("Bearer {token}")
        .parse()
        .map_err(|_| tonic::Status::invalid_argument("the token is not valid header text"))?;
    request.metadata_mut().insert("authorization", value);
    if let Some(cluster) = cluster {
        let value = cluster
            .parse()
            .map_err(|_| tonic::Status::invalid_argument("the cluster is not valid header text"))?;
        request
            .metadata_mut()
            .insert(crate::auth::CLUSTER_METADATA, value);
    }
    let response = IstioCertificateServiceClient::new(channel)
        .create_certificate(request)
        .await?;
    Ok(response.into_inner().cert_chain)
}
