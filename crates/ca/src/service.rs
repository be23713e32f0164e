//! `istio.v1.auth.IstioCertificateService/CreateCertificate`, served by meshd: the caller
//! proves who it is with its bearer token and gets a certificate for that identity only.

use crate::auth::{Authenticator, authenticate_request};
use crate::authority::CertificateAuthority;
use crate::proto::istio_certificate_service_server::{
    IstioCertificateService, IstioCertificateServiceServer,
};
use crate::proto::{IstioCertificateRequest, IstioCertificateResponse};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

/// Istio's CreateCertificate service: signs a CSR for the identity the caller's token
/// proves.
#[derive(Clone)]
pub struct CaService {
    /// The current CA; replaced when its files change (a root rotation step).
    authority: watch::Receiver<Arc<CertificateAuthority>>,
    authenticator: Arc<dyn Authenticator>,
}

impl CaService {
    /// A service of the current `authority`, checking tokens with `authenticator`.
    pub fn new(
        authority: watch::Receiver<Arc<CertificateAuthority>>,
        authenticator: Arc<dyn Authenticator>,
    ) -> CaService {
        CaService {
            authority,
            authenticator,
        }
    }

    /// The gRPC service to route.
    pub fn into_server(self) -> IstioCertificateServiceServer<CaService> {
        IstioCertificateServiceServer::new(self)
    }
}

#[tonic::async_trait]
impl IstioCertificateService for CaService {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        let caller = authenticate_request(self.authenticator.as_ref(), request.metadata())
            .await
            .inspect_err(|e| tracing::warn!(error = %e, "certificate request refused"))?;
        let request = request.into_inner();
        let ttl = u64::try_from(request.validity_duration)
            .ok()
            .filter(|s| *s > 0)
            .map(Duration::from_secs);
        let authority = self.authority.borrow().clone();
        match authority.sign(&request.csr, &caller, ttl) {
            Ok(cert_chain) => {
                tracing::debug!(%caller, "certificate issued");
                Ok(Response::new(IstioCertificateResponse { cert_chain }))
            }
            Err(error) => {
                tracing::warn!(%caller, %error, "certificate request refused");
                Err(error.into())
            }
        }
    }
}
