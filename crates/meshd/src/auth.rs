//! Who may get certificates and config from meshd's own mesh: workloads holding a token
//! meshd issued (local mode, `fleetmesh token`), and, with a cluster, pods presenting
//! their projected service-account token, checked by the cluster's TokenReview API.
//! (A fleet member's pods are checked by their own cluster: see `fleet::members`.)

use fleetmesh_ca::{AuthError, Authenticator, Identity, TokenIssuer};
use fleetmesh_kube::token_review::TokenReviewer;
use futures::future::BoxFuture;
use std::sync::Arc;

pub struct MeshAuthenticator {
    pub tokens: Arc<TokenIssuer>,
    pub cluster: Option<TokenReviewer>,
}

impl Authenticator for MeshAuthenticator {
    fn authenticate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Identity, AuthError>> {
        match &self.cluster {
            Some(cluster) if !TokenIssuer::is_ours(token) => cluster.authenticate(token),
            _ => self.tokens.authenticate(token),
        }
    }
}
