//! `istio.v1.auth.IstioCertificateService/CreateCertificate`, served by meshd: the caller
//! proves who it is with its bearer token and gets a certificate for that identity only,
//! from the CA of the mesh it belongs to ([`CaRouter`]: in a fleet, each project has its
//! own root and trust domain).

use crate::auth::{Authenticator, Origin, authenticate_request, caller_cluster};
use crate::authority::CertificateAuthority;
use crate::proto::istio_certificate_service_server::{
    IstioCertificateService, IstioCertificateServiceServer,
};
use crate::proto::{IstioCertificateRequest, IstioCertificateResponse};
use crate::refusals::RefusalLog;
use futures::future::BoxFuture;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

/// Who vouches for a caller and who signs for it: one mesh's authenticator and CA.
pub struct CaRoute {
    /// Checks the caller's token.
    pub authenticator: Arc<dyn Authenticator>,
    /// Signs for the identity the token proves.
    pub authority: Arc<CertificateAuthority>,
}

/// Which mesh's CA serves a caller, by the cluster it names
/// ([`crate::auth::CLUSTER_METADATA`]).
pub trait CaRouter: Send + Sync + 'static {
    /// The route for callers in `cluster`. Asynchronous: a mesh scaled to zero wakes for
    /// its first CSR.
    fn route<'a>(&'a self, cluster: Option<&'a str>) -> BoxFuture<'a, CaRoute>;
}

/// One CA for every caller (a single mesh).
struct SingleCa {
    authority: watch::Receiver<Arc<CertificateAuthority>>,
    authenticator: Arc<dyn Authenticator>,
}

impl CaRouter for SingleCa {
    fn route<'a>(&'a self, _: Option<&'a str>) -> BoxFuture<'a, CaRoute> {
        let route = CaRoute {
            authenticator: self.authenticator.clone(),
            authority: self.authority.borrow().clone(),
        };
        Box::pin(async move { route })
    }
}

/// Istio's CreateCertificate service: signs a CSR for the identity the caller's token
/// proves.
#[derive(Clone)]
pub struct CaService {
    router: Arc<dyn CaRouter>,
    refusals: Arc<RefusalLog>,
}

impl CaService {
    /// A service of the current `authority` (replaced when its files change: a root
    /// rotation step), checking tokens with `authenticator`.
    pub fn new(
        authority: watch::Receiver<Arc<CertificateAuthority>>,
        authenticator: Arc<dyn Authenticator>,
    ) -> CaService {
        CaService::routed(Arc::new(SingleCa {
            authority,
            authenticator,
        }))
    }

    /// A service signing with the CA `router` names for each caller.
    pub fn routed(router: Arc<dyn CaRouter>) -> CaService {
        CaService {
            router,
            refusals: Arc::default(),
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
        let metadata = request.metadata();
        let origin = Origin::of(request.extensions());
        let route = self.router.route(caller_cluster(metadata)).await;
        let caller = authenticate_request(route.authenticator.as_ref(), metadata, origin)
            .await
            .inspect_err(|error| {
                let what = "certificate request refused";
                self.refusals.warn(what, error, origin.peer);
            })?;
        let request = request.into_inner();
        let ttl = u64::try_from(request.validity_duration)
            .ok()
            .filter(|s| *s > 0)
            .map(Duration::from_secs);
        match route.authority.sign(&request.csr, &caller, ttl) {
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
