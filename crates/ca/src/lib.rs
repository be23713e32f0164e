//! The mesh's certificate authority: who a workload is ([`Identity`], proved by an
//! [`Authenticator`]), the CA that signs its certificate ([`CertificateAuthority`]), and
//! Istio's CreateCertificate API that serves it ([`CaService`]).

#![warn(missing_docs)]

pub mod auth;
pub mod authority;
pub mod client;
pub mod csr;
pub mod files;
pub mod identity;
pub mod inspect;
pub mod refusals;
pub mod rotation;
pub mod service;
pub mod token;

pub use auth::{AuthError, Authenticator, Origin};
pub use authority::{CertificateAuthority, ServingCertificate, SignError};
pub use identity::Identity;
pub use service::{CaRoute, CaRouter, CaService};
pub use token::{IssuedToken, TokenIssuer};

/// Istio's certificate API, from fleetmesh's own `proto/istio/v1/auth/ca.proto`
/// (generated code: documented by the proto).
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("istio.v1.auth");
}
