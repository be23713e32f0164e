//! A small HTTP app for demos and tests: answers with its service name, version and the
//! request's headers, and misbehaves on request.
//!
//! - `/flaky`: fails with 503 two times out of three (per app instance)
//! - `/delay/MS`: answers after MS milliseconds
//! - `/status/CODE`: answers with CODE
//! - `/metrics`: its own metrics in Prometheus' text format (`sample_requests_total`)
//! - anything else: 200

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub const SERVICE_HEADER: &str = "x-sample-service";
pub const VERSION_HEADER: &str = "x-sample-version";

struct AppState {
    service: String,
    version: String,
    flaky_calls: AtomicU64,
    /// Every request answered so far, `/metrics` aside.
    requests: AtomicU64,
}

pub struct SampleApp {
    address: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl SampleApp {
    /// Serves on `address` (port 0 picks one) until dropped.
    pub async fn start(
        address: SocketAddr,
        service: &str,
        version: &str,
    ) -> std::io::Result<SampleApp> {
        let listener = tokio::net::TcpListener::bind(address).await?;
        let address = listener.local_addr()?;
        let state = Arc::new(AppState {
            service: service.into(),
            version: version.into(),
            flaky_calls: AtomicU64::new(0),
            requests: AtomicU64::new(0),
        });
        let app = Router::new().fallback(handle).with_state(state);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(SampleApp { address, task })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for SampleApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Echoes back whatever each TCP connection sends, until dropped.
pub struct TcpEcho {
    address: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl TcpEcho {
    pub async fn start(address: SocketAddr) -> std::io::Result<TcpEcho> {
        let listener = tokio::net::TcpListener::bind(address).await?;
        let address = listener.local_addr()?;
        let task = tokio::spawn(async move {
            while let Ok((mut connection, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut reader, mut writer) = connection.split();
                    let _ = tokio::io::copy(&mut reader, &mut writer).await;
                });
            }
        });
        Ok(TcpEcho { address, task })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for TcpEcho {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The app's own metrics, as an app that Prometheus scrapes would serve them.
fn metrics(app: &AppState) -> String {
    format!(
        "# HELP sample_requests_total Requests the sample app answered.\n\
         # TYPE sample_requests_total counter\n\
         sample_requests_total{{service=\"{}\",version=\"{}\"}} {}\n",
        app.service,
        app.version,
        app.requests.load(Ordering::Relaxed)
    )
}

async fn handle(State(app): State<Arc<AppState>>, request: Request) -> Response {
    let path = request.uri().path().to_string();
    if path == "/metrics" {
        return metrics(&app).into_response();
    }
    app.requests.fetch_add(1, Ordering::Relaxed);
    let status = if path == "/flaky" {
        let n = app.flaky_calls.fetch_add(1, Ordering::Relaxed);
        if n % 3 == 2 {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        }
    } else if let Some(ms) = path.strip_prefix("/delay/").and_then(|ms| ms.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        StatusCode::OK
    } else if let Some(code) = path.strip_prefix("/status/").and_then(|c| c.parse().ok()) {
        StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST)
    } else {
        StatusCode::OK
    };
    let mut body = format!(
        "service={} version={} method={} path={path}\n",
        app.service,
        app.version,
        request.method()
    );
    for (name, value) in request.headers() {
        body.push_str(&format!(
            "{name}: {}\n",
            value.to_str().unwrap_or("<binary>")
        ));
    }
    let mut headers = HeaderMap::new();
    for (name, value) in [
        (SERVICE_HEADER, &app.service),
        (VERSION_HEADER, &app.version),
    ] {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    }
    (status, headers, body).into_response()
}
