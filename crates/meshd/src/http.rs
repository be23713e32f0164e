//! meshd's HTTP side: Prometheus metrics, istiod's debug endpoints, and the API the
//! installer talks to (how the cluster's webhooks reach meshd; fleet membership).

use crate::admin::{self, AdminToken};
use crate::debug;
use crate::fleet::{Change, Fleet};
use crate::local::LocalSource;
use axum::extract::Path;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router, middleware};
use fleetmesh_server::Registry;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Clone)]
pub struct HttpState {
    pub prometheus: Arc<prometheus_client::registry::Registry>,
    pub registry: Arc<Registry>,
    pub source: Arc<LocalSource>,
    pub fleet: Arc<Fleet>,
    /// Told each cluster's project, for the proxy-clients metric.
    pub metrics: Arc<fleetmesh_server::Metrics>,
    pub install: InstallInfo,
}

/// What `fleetmesh install` writes into a cluster so that its webhooks and proxies reach
/// this meshd.
#[derive(Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstallInfo {
    /// `https://HOST:PORT` of the admission webhooks.
    pub webhook_url: String,
    /// meshd's xDS address as proxies reach it.
    pub xds_address: String,
    pub trust_domain: String,
    #[serde(skip)]
    pub authority: tokio::sync::watch::Receiver<Arc<fleetmesh_ca::CertificateAuthority>>,
}

/// Metrics and readiness for anyone who reaches the port (Prometheus, probes); the debug
/// endpoints for this host, or with the admin token; the management API with the token
/// only.
pub fn router(state: HttpState, admin: Arc<AdminToken>) -> Router {
    let debug = Router::new()
        .route("/debug/syncz", get(syncz))
        .route("/debug/config_dump", get(config_dump))
        .route("/debug/config_errors", get(config_errors))
        .layer(middleware::from_fn_with_state(
            admin.clone(),
            admin::local_or_token,
        ));
    let management = Router::new()
        .route("/v1/install", get(install_info))
        .route("/v1/projects", get(projects))
        .route(
            "/v1/projects/{project}/memberships/{cluster}",
            put(register),
        )
        .route("/v1/projects/{project}/mesh/enable", post(enable_mesh))
        .layer(middleware::from_fn_with_state(admin, admin::require_token));
    Router::new()
        .route("/metrics", get(metrics))
        .route("/ready", get(|| async { "ready\n" }))
        .merge(debug)
        .merge(management)
        .with_state(state)
}

async fn metrics(State(state): State<HttpState>) -> Response {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &state.prometheus) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn syncz(State(state): State<HttpState>) -> Json<serde_json::Value> {
    Json(debug::syncz(&state.registry.list()))
}

async fn config_dump(
    State(state): State<HttpState>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(proxy_id) = query.get("proxyID") else {
        return (
            StatusCode::BAD_REQUEST,
            "pass ?proxyID=<node id>, as /debug/syncz lists them\n",
        )
            .into_response();
    };
    match state.registry.find(proxy_id) {
        Some(status) => Json(debug::config_dump(&status)).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            format!("proxy {proxy_id:?} is not connected\n"),
        )
            .into_response(),
    }
}

async fn config_errors(State(state): State<HttpState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "errors": state.source.errors() }))
}

async fn install_info(State(state): State<HttpState>) -> Json<serde_json::Value> {
    let mut info = serde_json::to_value(&state.install).unwrap_or_default();
    // The roots as they are now: after a root rotation, re-running install updates the
    // webhooks' caBundle.
    info["caBundle"] = state.install.authority.borrow().roots().into();
    Json(info)
}

async fn projects(State(state): State<HttpState>) -> Json<serde_json::Value> {
    Json(serde_json::to_value(state.fleet.projects()).unwrap_or_default())
}

#[derive(serde::Deserialize)]
struct Registration {
    location: String,
    channel: String,
}

async fn register(
    State(state): State<HttpState>,
    Path((project, cluster)): Path<(String, String)>,
    Json(registration): Json<Registration>,
) -> Response {
    let result = state.fleet.register(
        &project,
        &cluster,
        &registration.location,
        &registration.channel,
    );
    state
        .metrics
        .set_cluster_projects(state.fleet.cluster_projects());
    change_response(result)
}

async fn enable_mesh(State(state): State<HttpState>, Path(project): Path<String>) -> Response {
    change_response(state.fleet.enable_mesh(&project))
}

fn change_response(result: anyhow::Result<Change>) -> Response {
    match result {
        Ok(change) => Json(serde_json::json!({ "change": change })).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}\n")).into_response(),
    }
}
