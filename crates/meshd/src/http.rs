//! meshd's HTTP side: Prometheus metrics, istiod's debug endpoints, the status page, and
//! the API the installer talks to (how the cluster's webhooks reach meshd; fleet
//! membership).

use crate::admin::{self, AdminToken};
use crate::debug;
use crate::fleet::credential::Kubeconfig;
use crate::fleet::members::{MemberState, Members};
use crate::fleet::{Change, Fleet, FleetError};
use crate::local::LocalSource;
use crate::status_page;
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
    /// Each revision's rollout in meshd's own cluster.
    pub rollouts: tokio::sync::watch::Receiver<fleetmesh_dataplane::controller::Rollouts>,
    pub fleet: Arc<Fleet>,
    /// Which members are served now.
    pub members: Arc<Members>,
    /// Where member API servers may be.
    pub egress: fleetmesh_kube::egress::EgressPolicy,
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
    /// The trust domain of meshd's own mesh (a fleet project has its own).
    pub trust_domain: String,
    /// The cluster meshd's own mesh serves (`--cluster-id`): never served as a member.
    #[serde(skip)]
    pub own_cluster: String,
    /// meshd's own CA, whose roots verify meshd's serving certificate.
    #[serde(skip)]
    pub authority: tokio::sync::watch::Receiver<Arc<fleetmesh_ca::CertificateAuthority>>,
}

/// Which cluster install asks for: one that joins `project`'s fleet (with
/// `--enable-registration`), or, without a project, one meshd's own mesh serves.
#[derive(serde::Deserialize)]
struct InstallQuery {
    project: Option<String>,
    cluster: Option<String>,
}

/// Metrics and readiness for anyone who reaches the port (Prometheus, probes); the debug
/// endpoints for this host, or with the admin token; the management API with the token
/// only.
pub fn router(state: HttpState, admin: Arc<AdminToken>) -> Router {
    let debug = Router::new()
        .route("/debug/syncz", get(syncz))
        .route("/debug/config_dump", get(config_dump))
        .route("/debug/config_errors", get(config_errors))
        .route("/debug/status", get(status))
        .route("/status", get(status_page))
        .route("/status.js", get(status_script))
        .layer(middleware::from_fn_with_state(
            admin.clone(),
            admin::local_or_token,
        ));
    let management = Router::new()
        .route("/v1/install", get(install_info))
        .route("/v1/projects", get(projects))
        .route(
            "/v1/projects/{project}/memberships/{cluster}",
            put(register).delete(remove_membership),
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
        Ok(()) => {
            use fleetmesh_server::exposition::{CONTENT_TYPE, prometheus_text};
            (
                [(header::CONTENT_TYPE, CONTENT_TYPE)],
                prometheus_text(&text),
            )
                .into_response()
        }
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
            "pass ?proxyID=<node id> (as /debug/syncz lists them) or <pod>.<namespace>\n",
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

async fn status(State(state): State<HttpState>) -> Json<serde_json::Value> {
    let Json(projects) = projects(State(state.clone())).await;
    let mut rollouts = state.members.rollouts();
    let own = state.rollouts.borrow().clone();
    if !own.is_empty() {
        rollouts.insert(state.install.own_cluster.clone(), own);
    }
    let rollouts = serde_json::to_value(rollouts).unwrap_or_default();
    Json(status_page::summary(
        projects,
        rollouts,
        &state.registry.list(),
        state.source.errors(),
    ))
}

async fn status_page() -> Response {
    let headers = [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (
            header::CONTENT_SECURITY_POLICY,
            status_page::CONTENT_SECURITY_POLICY,
        ),
    ];
    (headers, status_page::PAGE).into_response()
}

async fn status_script() -> Response {
    let headers = [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")];
    (headers, status_page::SCRIPT).into_response()
}

async fn install_info(
    State(state): State<HttpState>,
    Query(query): Query<InstallQuery>,
) -> Response {
    let mut info = serde_json::to_value(&state.install).unwrap_or_default();
    // The roots as they are now: after a root rotation, re-running install updates the
    // webhooks' caBundle.
    info["caBundle"] = state.install.authority.borrow().roots().into();
    let member_project = query
        .project
        .filter(|_| query.cluster.as_deref() != Some(state.install.own_cluster.as_str()));
    if let Some(project) = member_project {
        if !fleetmesh_api::validate::is_dns1123_label(&project) {
            let error = FleetError::InvalidName {
                what: "project",
                name: project,
            };
            return fleet_error(error);
        }
        // The member's proxies are served by its project's mesh, in its trust domain.
        info["trustDomain"] = state.fleet.trust_domain(&project).into();
    }
    Json(info).into_response()
}

/// Every project and its members, each marked `served` when meshd serves it (its mesh
/// enabled, its credential working) and `idle` while it is scaled to zero.
async fn projects(State(state): State<HttpState>) -> Json<serde_json::Value> {
    let mut projects = serde_json::to_value(state.fleet.projects()).unwrap_or_default();
    let served = state.members.served();
    for (project, value) in projects.as_object_mut().into_iter().flatten() {
        let members = value["memberships"].as_object_mut().into_iter().flatten();
        for (cluster, member) in members {
            let state = served
                .get(cluster)
                .filter(|(p, _)| p == project)
                .map(|(_, s)| *s);
            member["served"] = state.is_some().into();
            member["idle"] = (state == Some(MemberState::Asleep)).into();
        }
    }
    Json(projects)
}

/// A registration, as install sends it.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Registration {
    location: String,
    channel: String,
    /// The kubeconfig meshd serves the cluster with (its `fleetmesh-meshd` service
    /// account's token); without it, the cluster is listed but not served.
    #[serde(default)]
    kubeconfig: Option<String>,
}

async fn register(
    State(state): State<HttpState>,
    Path((project, cluster)): Path<(String, String)>,
    Json(registration): Json<Registration>,
) -> Response {
    let credential = match &registration.kubeconfig {
        Some(text) => match Kubeconfig::parse(text, &state.egress).await {
            Ok(kubeconfig) => Some(kubeconfig),
            Err(e) => {
                let reason = format!("kubeconfig: {e}\n");
                return (StatusCode::BAD_REQUEST, reason).into_response();
            }
        },
        None => None,
    };
    let result = state
        .fleet
        .register(
            &project,
            &cluster,
            &registration.location,
            &registration.channel,
            credential.as_ref(),
        )
        .await;
    change_response(result)
}

async fn remove_membership(
    State(state): State<HttpState>,
    Path((project, cluster)): Path<(String, String)>,
) -> Response {
    match state.fleet.remove(&project, &cluster).await {
        Ok(()) => Json(serde_json::json!({ "change": "removed" })).into_response(),
        Err(e) => fleet_error(e),
    }
}

async fn enable_mesh(
    State(state): State<HttpState>,
    Path(project): Path<String>,
    settings: Option<Json<crate::fleet::MeshSettings>>,
) -> Response {
    let settings = settings.map(|Json(s)| s).unwrap_or_default();
    let result = state.fleet.enable_mesh(&project, &settings).await;
    match result {
        Ok(change) => {
            let trust_domain = state.fleet.trust_domain(&project);
            let on_demand_routes = state
                .fleet
                .project(&project)
                .is_some_and(|p| state.members.on_demand_routes(&p));
            let answer = serde_json::json!({
                "change": change,
                "trustDomain": trust_domain,
                "onDemandRoutes": on_demand_routes,
            });
            Json(answer).into_response()
        }
        Err(e) => fleet_error(e),
    }
}

fn change_response(result: Result<Change, FleetError>) -> Response {
    match result {
        Ok(change) => Json(serde_json::json!({ "change": change })).into_response(),
        Err(e) => fleet_error(e),
    }
}

fn fleet_error(error: FleetError) -> Response {
    let status = match &error {
        FleetError::InvalidName { .. } | FleetError::InvalidTrustDomain(_) => {
            StatusCode::BAD_REQUEST
        }
        FleetError::Conflict { .. } | FleetError::TrustDomainFixed { .. } => StatusCode::CONFLICT,
        FleetError::NotFound { .. } => StatusCode::NOT_FOUND,
        FleetError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, format!("{error:#}\n")).into_response()
}
