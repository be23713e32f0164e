//! Who is calling: every call to the CA and every xDS stream carries a bearer token, and
//! an [`Authenticator`] turns it into the one [`Identity`] the caller may act as.
//! Local mode uses meshd's own tokens ([`crate::token`]); with a cluster, pods' projected
//! service-account tokens are checked by the cluster's TokenReview API
//! (`fleetmesh_kube::token_review`) behind the same trait.

use crate::identity::Identity;
use futures::future::BoxFuture;
use std::net::IpAddr;
use tonic::Extensions;
use tonic::metadata::MetadataMap;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

/// Why a caller is not authenticated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// It sent no token.
    #[error("no `authorization: Bearer <token>` metadata")]
    Missing,
    /// Its token is malformed or its signature wrong.
    #[error("the token is not valid: {0}")]
    Invalid(&'static str),
    /// The token's issuer refused it (expired, revoked, wrong audience).
    #[error("the token was refused: {0}")]
    Refused(String),
    /// The token could not be checked now (the API server is unreachable, say): the
    /// caller should retry, not give up.
    #[error("the token cannot be checked now: {0}")]
    Unavailable(String),
}

impl From<AuthError> for tonic::Status {
    fn from(error: AuthError) -> tonic::Status {
        match error {
            AuthError::Unavailable(_) => tonic::Status::unavailable(error.to_string()),
            _ => tonic::Status::unauthenticated(error.to_string()),
        }
    }
}

/// The gRPC metadata in which Istio's agent names its proxy's cluster (`CLUSTER_ID`), on
/// xDS streams and CA calls alike: whose API server reviews its token.
pub const CLUSTER_METADATA: &str = "clusterid";

/// Where a call reached meshd from, as its connection tells.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Origin {
    /// The peer's address (for pods behind NAT, their cluster's egress address); none
    /// when the connection has no IP peer.
    pub peer: Option<IpAddr>,
    /// Whether it came over meshd's TLS port (15012), the one a cluster's pods reach,
    /// rather than its plaintext port (15010, on loopback unless an operator moves it).
    pub over_tls: bool,
}

impl Origin {
    /// The origin tonic recorded in a request's extensions when it accepted the
    /// connection.
    pub fn of(extensions: &Extensions) -> Origin {
        let peer = |tcp: &TcpConnectInfo| tcp.remote_addr().map(|a| a.ip());
        match extensions.get::<TlsConnectInfo<TcpConnectInfo>>() {
            Some(tls) => Origin {
                peer: peer(tls.get_ref()),
                over_tls: true,
            },
            None => Origin {
                peer: extensions.get::<TcpConnectInfo>().and_then(peer),
                over_tls: false,
            },
        }
    }
}

/// Tells who a bearer token proves.
pub trait Authenticator: Send + Sync + 'static {
    /// The identity `token`, presented from `origin`, proves. Asynchronous because some
    /// authenticators ask another service (Kubernetes' TokenReview).
    fn authenticate<'a>(
        &'a self,
        token: &'a str,
        origin: Origin,
    ) -> BoxFuture<'a, Result<Identity, AuthError>>;
}

/// The cluster a gRPC call says its caller runs in ([`CLUSTER_METADATA`]), if it says.
pub fn caller_cluster(metadata: &MetadataMap) -> Option<&str> {
    metadata
        .get(CLUSTER_METADATA)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|c| !c.is_empty())
}

/// The bearer token of a gRPC call, as Istio's agent sends it.
pub fn bearer_token(metadata: &MetadataMap) -> Result<&str, AuthError> {
    let value = metadata
        .get("authorization")
        .ok_or(AuthError::Missing)?
        .to_str()
        .map_err(|_| AuthError::Invalid("authorization metadata is not text"))?;
    value
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(AuthError::Invalid(
            "authorization metadata is not `Bearer <token>`",
        ))
}

/// Authenticates the caller of a gRPC request that came from `origin`.
pub async fn authenticate_request(
    authenticator: &dyn Authenticator,
    metadata: &MetadataMap,
    origin: Origin,
) -> Result<Identity, AuthError> {
    authenticator
        .authenticate(bearer_token(metadata)?, origin)
        .await
}
