//! The app's health probes, answered on the agent's status port (Istio's 15020). The
//! injector points the kubelet's HTTP and TCP probes here (STRICT mTLS would refuse the
//! kubelet's plaintext probe at the sidecar), and hands the originals over in
//! `ISTIO_KUBE_APP_PROBERS`, keyed by the new path; the agent runs each original probe
//! against the app from inside the pod and answers 200 or 503.

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// One original probe, as the injector recorded it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppProbe {
    pub http_get: Option<HttpGet>,
    pub tcp_socket: Option<TcpSocket>,
    pub timeout_seconds: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpGet {
    #[serde(default = "root")]
    pub path: String,
    pub port: u16,
    pub scheme: Option<String>,
    pub host: Option<String>,
    #[serde(default)]
    pub http_headers: Vec<Header>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Header {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TcpSocket {
    pub port: u16,
}

fn root() -> String {
    "/".into()
}

/// The probes by path (`/app-health/<container>/readyz`, ...).
pub type AppProbers = BTreeMap<String, AppProbe>;

/// Parses `ISTIO_KUBE_APP_PROBERS`; the error names the problem.
pub fn parse(text: &str) -> Result<AppProbers, String> {
    serde_json::from_str(text).map_err(|e| format!("ISTIO_KUBE_APP_PROBERS: {e}"))
}

struct Prober {
    probers: AppProbers,
    /// Where the app listens: the pod's IP (the agent's own traffic is not redirected).
    app_host: IpAddr,
    client: reqwest::Client,
}

/// Answers the probes on `listener` until the task is aborted.
pub fn serve(
    listener: tokio::net::TcpListener,
    probers: AppProbers,
    app_host: IpAddr,
) -> anyhow::Result<JoinHandle<()>> {
    // As the kubelet: an app's HTTPS probe is not verified, nor redirected elsewhere.
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let state = Arc::new(Prober {
        probers,
        app_host,
        client,
    });
    let app = axum::Router::new().fallback(answer).with_state(state);
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the status port stopped");
        }
    }))
}

async fn answer(State(prober): State<Arc<Prober>>, uri: Uri) -> Response {
    let Some(probe) = prober.probers.get(uri.path()) else {
        return (StatusCode::NOT_FOUND, "no such probe\n").into_response();
    };
    match run(&prober, probe).await {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(reason) => {
            tracing::debug!(path = uri.path(), %reason, "app probe failed");
            (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")).into_response()
        }
    }
}

async fn run(prober: &Prober, probe: &AppProbe) -> Result<(), String> {
    let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1));
    if let Some(http) = &probe.http_get {
        let scheme = http
            .scheme
            .as_deref()
            .unwrap_or("HTTP")
            .to_ascii_lowercase();
        let host = http
            .host
            .clone()
            .unwrap_or_else(|| url_host(prober.app_host));
        let url = format!("{scheme}://{host}:{}{}", http.port, http.path);
        let mut request = prober.client.get(&url).timeout(timeout);
        for header in &http.http_headers {
            request = request.header(&header.name, &header.value);
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        let status = response.status();
        // The kubelet's rule: 2xx and 3xx succeed.
        return if status.is_success() || status.is_redirection() {
            Ok(())
        } else {
            Err(format!("GET {url}: {status}"))
        };
    }
    if let Some(tcp) = &probe.tcp_socket {
        let address = (prober.app_host, tcp.port);
        return match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(address)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("connect {}:{}: {e}", address.0, address.1)),
            Err(_) => Err(format!("connect {}:{}: timed out", address.0, address.1)),
        };
    }
    Err("the probe has neither httpGet nor tcpSocket".into())
}

fn url_host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn app(status: u16) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let app = axum::Router::new().route(
            "/ready",
            axum::routing::get(move || async move { StatusCode::from_u16(status).unwrap() }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        port
    }

    async fn status(port: u16, path: &str) -> u16 {
        reqwest::get(format!("http://127.0.0.1:{port}{path}"))
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    #[tokio::test]
    async fn answers_for_the_app_as_the_kubelet_would() {
        let healthy = app(200).await;
        let failing = app(500).await;
        let closed = {
            let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            socket.local_addr().unwrap().port()
        };
        let probers = parse(&format!(
            r#"{{
              "/app-health/web/readyz": {{"httpGet": {{"path": "/ready", "port": {healthy}, "scheme": "HTTP"}}, "timeoutSeconds": 1}},
              "/app-health/web/livez": {{"tcpSocket": {{"port": {healthy}}}}},
              "/app-health/bad/readyz": {{"httpGet": {{"path": "/ready", "port": {failing}}}}},
              "/app-health/gone/livez": {{"tcpSocket": {{"port": {closed}}}}}
            }}"#
        ))
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = serve(listener, probers, "127.0.0.1".parse().unwrap()).unwrap();
        assert_eq!(status(port, "/app-health/web/readyz").await, 200);
        assert_eq!(status(port, "/app-health/web/livez").await, 200);
        assert_eq!(status(port, "/app-health/bad/readyz").await, 503);
        assert_eq!(status(port, "/app-health/gone/livez").await, 503);
        assert_eq!(status(port, "/app-health/other/readyz").await, 404);
        task.abort();
    }

    #[test]
    fn bad_probers_are_named() {
        assert!(parse("{").unwrap_err().contains("ISTIO_KUBE_APP_PROBERS"));
        assert!(parse(r#"{"/x": {"httpGet": {"port": "http"}}}"#).is_err());
    }
}
