//! meshd's HTTP side: Prometheus metrics and istiod's debug endpoints.

use crate::debug;
use crate::local::LocalSource;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use fleetmesh_server::Registry;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Clone)]
pub struct HttpState {
    pub prometheus: Arc<prometheus_client::registry::Registry>,
    pub registry: Arc<Registry>,
    pub source: Arc<LocalSource>,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/ready", get(|| async { "ready\n" }))
        .route("/debug/syncz", get(syncz))
        .route("/debug/config_dump", get(config_dump))
        .route("/debug/config_errors", get(config_errors))
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
