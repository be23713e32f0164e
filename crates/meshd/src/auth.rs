//! Who may get certificates and config from meshd: workloads holding a token meshd
//! issued (local mode, `fleetmesh token`), and, with a cluster, pods presenting their
//! projected service-account token, checked by the cluster's TokenReview API.

use crate::fleet::members::Members;
use fleetmesh_ca::{AuthError, Authenticator, Identity, TokenIssuer};
use fleetmesh_kube::token_review::TokenReviewer;
use futures::future::BoxFuture;
use std::sync::Arc;

pub struct MeshAuthenticator {
    pub tokens: Arc<TokenIssuer>,
    pub cluster: Option<TokenReviewer>,
    /// The fleet's members: a caller naming one is reviewed by its API server alone.
    pub members: Arc<Members>,
}

impl Authenticator for MeshAuthenticator {
    fn authenticate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Identity, AuthError>> {
        match &self.cluster {
            Some(cluster) if !TokenIssuer::is_ours(token) => cluster.authenticate(token),
            _ => self.tokens.authenticate(token),
        }
    }

    fn authenticate_in<'a>(
        &'a self,
        token: &'a str,
        cluster: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Identity, AuthError>> {
        Box::pin(async move {
            let member = match cluster {
                Some(cluster) => self.members.reviewer(cluster).await,
                None => None,
            };
            match member {
                Some(member) => member.authenticate(token).await,
                None => self.authenticate(token).await,
            }
        })
    }
}
