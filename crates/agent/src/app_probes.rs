//! The agent's status port (Istio's 15020): the workload's metrics on
//! `/stats/prometheus` (`crate::metrics`: Envoy's, and the app's own if it has them), and
//! the app's health probes. The
//! injector points the kubelet's HTTP and TCP probes here (STRICT mTLS would refuse the
//! kubelet's plaintext probe at the sidecar), and hands the originals over in
//! `ISTIO_KUBE_APP_PROBERS`, keyed by the new path; the agent runs each original probe
//! against the app from inside the pod and answers 200 or 503.
//!
//! The agent runs as the proxy's uid, whose connections to the pod's own address capture
//! sends into Envoy's inbound side (where STRICT mTLS would refuse them); like Envoy's
//! own connections to the app they come from 127.0.0.6, which capture leaves alone.

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
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

/// The source of probe connections to the app: capture lets this address through
/// (Istio's `InboundPassthroughBindIpv4`).
const PROBE_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);

struct Prober {
    probers: AppProbers,
    /// Where the app listens: the pod's IP.
    app_host: IpAddr,
    /// For probes of `app_host`: from [`PROBE_SOURCE`] where the app host is IPv4.
    app_client: reqwest::Client,
    /// For probes that name another `host`, which a loopback source could not reach.
    other_client: reqwest::Client,
}

/// Answers the probes and metrics scrapes on `listener` until the task is aborted.
pub fn serve(
    listener: tokio::net::TcpListener,
    probers: AppProbers,
    app_host: IpAddr,
    envoy_admin: std::path::PathBuf,
    app_metrics: Option<crate::metrics::AppMetrics>,
) -> anyhow::Result<JoinHandle<()>> {
    // As the kubelet: an app's HTTPS probe is not verified, nor redirected elsewhere.
    let client = || {
        reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .redirect(reqwest::redirect::Policy::none())
    };
    let state = Arc::new(Prober {
        probers,
        app_host,
        app_client: client().local_address(probe_source(app_host)).build()?,
        other_client: client().build()?,
    });
    let app_metrics_url = app_metrics.map(|m| {
        let address = SocketAddr::new(app_host, m.port);
        format!("http://{address}{}", m.path)
    });
    let metrics_state = state.clone();
    let metrics = axum::routing::get(async move || {
        let app = app_metrics_url
            .as_deref()
            .map(|url| (&metrics_state.app_client, url));
        match crate::metrics::scrape(&envoy_admin, app).await {
            Ok(text) => (StatusCode::OK, text),
            Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
        }
    });
    let app = axum::Router::new()
        .route("/stats/prometheus", metrics)
        .fallback(answer)
        .with_state(state);
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
        let (host, client) = match &http.host {
            Some(host) => (host.clone(), &prober.other_client),
            None => (url_host(prober.app_host), &prober.app_client),
        };
        let url = format!("{scheme}://{host}:{}{}", http.port, http.path);
        let mut request = client.get(&url).timeout(timeout);
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
        let address = SocketAddr::new(prober.app_host, tcp.port);
        return match tokio::time::timeout(timeout, connect_to_app(address)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("connect {address}: {e}")),
            Err(_) => Err(format!("connect {address}: timed out")),
        };
    }
    Err("the probe has neither httpGet nor tcpSocket".into())
}

/// Where probe connections to `app_host` come from (see [`PROBE_SOURCE`]).
fn probe_source(app_host: IpAddr) -> Option<IpAddr> {
    app_host.is_ipv4().then_some(IpAddr::V4(PROBE_SOURCE))
}

async fn connect_to_app(address: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let socket = match address {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    if let Some(source) = probe_source(address.ip()) {
        socket.bind(SocketAddr::new(source, 0))?;
    }
    socket.connect(address).await
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
        let no_envoy = std::env::temp_dir().join("fleetmesh-no-such-admin.sock");
        let task = serve(
            listener,
            probers,
            "127.0.0.1".parse().unwrap(),
            no_envoy,
            None,
        )
        .unwrap();
        // Metrics need Envoy: without it, unavailable.
        assert_eq!(status(port, "/stats/prometheus").await, 503);
        assert_eq!(status(port, "/app-health/web/readyz").await, 200);
        assert_eq!(status(port, "/app-health/web/livez").await, 200);
        assert_eq!(status(port, "/app-health/bad/readyz").await, 503);
        assert_eq!(status(port, "/app-health/gone/livez").await, 503);
        assert_eq!(status(port, "/app-health/other/readyz").await, 404);
        task.abort();
    }

    #[tokio::test]
    async fn probes_come_from_the_address_capture_lets_through() {
        let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel::<IpAddr>();
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http_port = http.local_addr().unwrap().port();
        let http_seen = seen_tx.clone();
        let app = axum::Router::new()
            .route(
                "/ready",
                axum::routing::get(
                    move |axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<
                        SocketAddr,
                    >| async move {
                        let _ = http_seen.send(peer.ip());
                    },
                ),
            )
            .into_make_service_with_connect_info::<SocketAddr>();
        tokio::spawn(async move { axum::serve(http, app).await });
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp_port = tcp.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((_, peer)) = tcp.accept().await {
                let _ = seen_tx.send(peer.ip());
            }
        });
        let probers = parse(&format!(
            r#"{{"/app-health/web/readyz": {{"httpGet": {{"path": "/ready", "port": {http_port}}}}},
                "/app-health/web/livez": {{"tcpSocket": {{"port": {tcp_port}}}}}}}"#
        ))
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let admin = std::env::temp_dir().join("fleetmesh-no-such-admin.sock");
        let task = serve(listener, probers, "127.0.0.1".parse().unwrap(), admin, None).unwrap();
        for path in ["/app-health/web/readyz", "/app-health/web/livez"] {
            assert_eq!(status(port, path).await, 200, "{path}");
            let source = seen.recv().await.unwrap();
            assert_eq!(source.to_string(), "127.0.0.6", "{path}");
        }
        task.abort();
    }

    #[test]
    fn bad_probers_are_named() {
        assert!(parse("{").unwrap_err().contains("ISTIO_KUBE_APP_PROBERS"));
        assert!(parse(r#"{"/x": {"httpGet": {"port": "http"}}}"#).is_err());
    }
}
