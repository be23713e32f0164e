//! Envoy's xDS stream goes through the agent, as with Istio's agent: Envoy connects to a
//! Unix socket only its own user can open, and the agent forwards each stream to meshd,
//! adding the workload's credential (read from the token file for every stream) and
//! checking meshd's certificate. So the token is never in Envoy's config, where its admin
//! interface or a config dump would show it, and a rotated token is always the one used.
//!
//! Only the aggregated discovery service is forwarded: the CA is the agent's own business.

use crate::meshd::MeshdConnection;
use crate::token::TokenFile;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use std::path::Path;
use std::sync::Arc;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tower::ServiceExt;

/// The gRPC service whose streams are forwarded (SotW and delta ADS).
const ADS_SERVICE: &str = "/envoy.service.discovery.v3.AggregatedDiscoveryService/";

struct Upstream {
    meshd: Channel,
    token: TokenFile,
    /// Named to meshd on every stream ([`fleetmesh_ca::auth::CLUSTER_METADATA`]).
    cluster: Option<HeaderValue>,
}

/// Serves Envoy on the Unix socket `path` (mode 0600, replacing a stale one) until the
/// task is aborted, forwarding over `channel` as `connection` says.
pub fn serve(
    path: &Path,
    channel: Channel,
    connection: &MeshdConnection,
) -> std::io::Result<JoinHandle<()>> {
    let cluster = match connection.cluster.as_deref().map(HeaderValue::from_str) {
        Some(Ok(value)) => Some(value),
        Some(Err(_)) => {
            return Err(std::io::Error::other(
                "the cluster id holds characters a header cannot carry",
            ));
        }
        None => None,
    };
    let listener = crate::socket::bind_private(path)?;
    let upstream = Upstream {
        meshd: channel,
        token: connection.token.clone(),
        cluster,
    };
    let app = Router::new()
        .fallback(forward)
        .with_state(Arc::new(upstream));
    Ok(tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "the xDS proxy for Envoy failed");
        }
    }))
}

/// One stream of Envoy's, to meshd and back as it is, with the credential added.
async fn forward(State(upstream): State<Arc<Upstream>>, request: Request) -> Response {
    if !request.uri().path().starts_with(ADS_SERVICE) {
        return grpc_error(tonic::Status::unimplemented(
            "the agent forwards aggregated discovery only",
        ));
    }
    let token = match upstream.token.read() {
        Ok(token) => token,
        Err(error) => {
            tracing::warn!(%error, "no token for meshd");
            return grpc_error(tonic::Status::unauthenticated(error.to_string()));
        }
    };
    let Ok(mut credential) = HeaderValue::from_str(&format!("Bearer {token}")) else {
        return grpc_error(tonic::Status::unauthenticated(
            "the token file holds characters a header cannot carry",
        ));
    };
    credential.set_sensitive(true);
    let (mut parts, body) = request.into_parts();
    parts.headers.insert(header::AUTHORIZATION, credential);
    if let Some(cluster) = &upstream.cluster {
        parts
            .headers
            .insert(fleetmesh_ca::auth::CLUSTER_METADATA, cluster.clone());
    }
    let request = Request::from_parts(parts, tonic::body::Body::new(body));
    match upstream.meshd.clone().oneshot(request).await {
        Ok(response) => {
            log_refusal(response.headers());
            response.map(Body::new)
        }
        Err(error) => {
            tracing::warn!(%error, "meshd cannot be reached");
            grpc_error(tonic::Status::unavailable(format!(
                "meshd cannot be reached: {error}"
            )))
        }
    }
}

/// Says why meshd refused a stream at once (a trailers-only answer: its status in the
/// headers): Envoy only retries, and the reason would be seen nowhere else.
fn log_refusal(headers: &axum::http::HeaderMap) {
    if let Some(status) = tonic::Status::from_header_map(headers)
        && status.code() != tonic::Code::Ok
    {
        tracing::warn!(code = ?status.code(), message = status.message(), "meshd refused Envoy's xDS stream");
    }
}

fn grpc_error(status: tonic::Status) -> Response {
    status.into_http()
}
