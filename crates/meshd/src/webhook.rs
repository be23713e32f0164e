//! The admission webhooks the API server calls over HTTPS: sidecar and gateway injection
//! (`/inject/<revision>`) and config validation (`/validate`). meshd runs outside the
//! cluster, so the webhook configurations reach it by URL and trust it through the mesh
//! CA's roots (their `caBundle`); its serving certificate is issued by that CA.

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use fleetmesh_ca::ServingCertificate;
use fleetmesh_inject::review::{self, Verdict};
use fleetmesh_inject::webhook_path::InjectPath;
use fleetmesh_inject::{InjectedBy, Settings};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How long an injection waits for the proxy versions after meshd starts (within the
/// API server's 10 s webhook timeout).
const VERSIONS_WAIT: Duration = Duration::from_secs(5);

/// What injected proxies are told about the mesh.
#[derive(Clone)]
pub struct WebhookState {
    /// meshd's xDS address as proxies reach it.
    pub xds_address: String,
    /// The trust domain of meshd's own mesh (a member's is its project's).
    pub trust_domain: String,
    /// Each revision's proxy version from its DataPlaneControl (a managed rollout) in
    /// meshd's own cluster.
    pub proxy_versions: fleetmesh_dataplane::controller::ProxyVersionsWatch,
    /// A call for a member cluster keeps it awake (or wakes it), and its pods get its
    /// project's trust domain and its own DataPlaneControls' versions.
    pub members: Arc<crate::fleet::members::Members>,
    /// Where the webhooks count their answers (istiod's `sidecar_injection_*`,
    /// `galley_validation_*`).
    pub metrics: Arc<fleetmesh_server::Metrics>,
    /// Proxies injected into meshd's own cluster speak delta xDS (`--on-demand-routes`:
    /// routes on demand need it); a member's, as its project's setting says.
    pub delta_xds: bool,
}

impl WebhookState {
    /// For meshd's `config`, with proxies reaching xDS where `install` says, its own
    /// mesh's proxy versions and fleet `members`.
    pub fn new(
        config: &crate::MeshdConfig,
        install: &crate::http::InstallInfo,
        proxy_versions: fleetmesh_dataplane::controller::ProxyVersionsWatch,
        members: &Arc<crate::fleet::members::Members>,
        metrics: &Arc<fleetmesh_server::Metrics>,
    ) -> WebhookState {
        WebhookState {
            xds_address: install.xds_address.clone(),
            trust_domain: config.trust_domain.clone(),
            proxy_versions,
            members: members.clone(),
            metrics: metrics.clone(),
            delta_xds: config.on_demand_routes,
        }
    }
}

/// TLS for the webhook port, with meshd's serving certificate.
pub fn tls_config(serving: &ServingCertificate) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let chain = CertificateDer::pem_slice_iter(serving.chain.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("the serving certificate")?;
    let key = PrivateKeyDer::from_pem_slice(serving.key.as_bytes()).context("the serving key")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves the webhooks on `listener` until `stop`, then ends every connection (the
/// API server keeps its connections open: one left serving would answer with a stopped
/// meshd's state) and returns once they are closed.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    state: WebhookState,
    stop: CancellationToken,
) {
    let limits = crate::http_server::Limits::default();
    crate::http_server::serve(listener, Some(tls), router(state), limits, stop).await;
}

fn router(state: WebhookState) -> Router {
    Router::new()
        .route("/inject/{*path}", post(inject))
        .route(VALIDATE, post(validate))
        .layer(axum::middleware::from_fn_with_state(state.clone(), count))
        .with_state(state)
}

/// The validating webhook's path (every other path injects).
const VALIDATE: &str = "/validate";

/// Counts each webhook answer: an injection that patched the pod or a validation that
/// admitted the object is a success; any other answer (a refusal, a request that is no
/// AdmissionReview, an unknown revision) a failure.
async fn count(
    State(state): State<WebhookState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let validation = request.uri().path() == VALIDATE;
    let response = next.run(request).await;
    let metrics = &state.metrics;
    let passed = response.status().is_success() && response.extensions().get::<Refused>().is_none();
    match (validation, passed) {
        (true, true) => metrics.validation_passed.inc(),
        (true, false) => metrics.validation_failed.inc(),
        (false, true) => metrics.injection_success.inc(),
        (false, false) => metrics.injection_failure.inc(),
    };
    response
}

/// Marks an answer that refuses what it was asked to admit (sent as HTTP 200).
#[derive(Clone, Copy)]
struct Refused;

/// An injection: the path ([`InjectPath`]) carries the per-cluster options install
/// wrote into the webhook's URL.
async fn inject(State(state): State<WebhookState>, uri: axum::http::Uri, body: Bytes) -> Response {
    let path = match InjectPath::parse(uri.path()) {
        Ok(path) => path,
        Err(e) => return (StatusCode::NOT_FOUND, format!("{e}\n")).into_response(),
    };
    let InjectPath {
        revision,
        cluster,
        cni_managed,
        hub,
    } = path;
    // Pods are being made: their proxies will connect.
    let (trust_domain, mut versions, delta_xds) = match state.members.webhook_call(&cluster).await {
        Some(member) => (member.trust_domain, member.proxy_versions, member.delta_xds),
        None => (state.trust_domain, state.proxy_versions, state.delta_xds),
    };
    // Just started: wait briefly for the DataPlaneControls rather than inject a version
    // a managed rollout would evict again. Still unknown: refused, and the API server
    // retries the pod (the injection webhook fails closed).
    let known = tokio::time::timeout(VERSIONS_WAIT, versions.wait_for(Option::is_some)).await;
    let proxy_version = match known {
        Ok(Ok(versions)) => versions
            .as_ref()
            .and_then(|v| v.get(revision.name).cloned()),
        _ => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "meshd has not read the DataPlaneControls' proxy versions yet; retry\n",
            )
                .into_response();
        }
    };
    let settings = Settings {
        revision,
        xds_address: state.xds_address,
        trust_domain,
        cluster_id: cluster,
        cni_managed,
        injected_by: InjectedBy::Webhook,
        proxy_version,
        hub,
        delta_xds,
    };
    match fleetmesh_inject::admission::admit_pod(&body, &settings) {
        Ok(answer) => axum::Json(answer).into_response(),
        Err(e) => bad_review(e),
    }
}

async fn validate(body: Bytes) -> Response {
    let request = match review::decode(&body) {
        Ok(request) => request,
        Err(e) => return bad_review(e),
    };
    let verdict = match (&request.object, request.operation.as_str()) {
        (_, "DELETE") | (None, _) => Verdict::Allow,
        (Some(object), _) => match serde_yaml_ng::to_value(object)
            .map_err(|e| e.to_string())
            .and_then(|stored| {
                fleetmesh_api::load_stored_object(&stored).map_err(|(described, problems)| {
                    let problems: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
                    format!("{described}: {}", problems.join("; "))
                })
            }) {
            Ok(_) => Verdict::Allow,
            Err(message) => Verdict::Deny { code: 400, message },
        },
    };
    let refused = matches!(verdict, Verdict::Deny { .. });
    let mut response = axum::Json(review::respond(&request.uid, verdict)).into_response();
    if refused {
        response.extensions_mut().insert(Refused);
    }
    response
}

fn bad_review(error: review::ReviewError) -> Response {
    (StatusCode::BAD_REQUEST, format!("{error}\n")).into_response()
}
