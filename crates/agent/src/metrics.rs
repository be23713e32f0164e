//! The workload's metrics as Prometheus scrapes them from Istio's agent
//! (`:15020/stats/prometheus`): Envoy's, with Istio's standard series under Istio's names.
//! meshd's config has Envoy count them (`fleetmesh_xds::telemetry`), from labels Envoy
//! reads in its environment (`WorkloadIdentity::envoy_environment`); Envoy's Prometheus text calls them
//! `envoy_istio_*` and leaves unknown labels empty, where Istio says `istio_*` and
//! `unknown`. An app that asked Prometheus to scrape it has its own metrics there too
//! (Istio's metrics merging): the injector pointed its `prometheus.io/*` annotations at
//! the agent and handed the originals over ([`AppMetrics`]).

use serde::Deserialize;
use std::path::Path;
use std::time::Duration;

/// How long the app may take to answer a scrape.
const APP_TIMEOUT: Duration = Duration::from_secs(5);
/// The most of the app's metrics one scrape reads: the agent holds them in memory.
const APP_MAX_BYTES: usize = 16 << 20;

/// Where the app serves its own metrics: its original `prometheus.io/port` and
/// `prometheus.io/path` annotations, which the injector hands the agent as JSON in
/// `ISTIO_PROMETHEUS_ANNOTATIONS` (`{"scrape":"true","port":"9090","path":"/metrics"}`;
/// Istio's defaults are port 80 and `/metrics`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppMetrics {
    pub port: u16,
    pub path: String,
}

impl AppMetrics {
    /// Reads the injector's JSON; an error names the field and why.
    pub fn parse(json: &str) -> Result<AppMetrics, String> {
        #[derive(Deserialize)]
        struct Annotations {
            #[serde(default)]
            port: String,
            #[serde(default)]
            path: String,
        }
        let given: Annotations =
            serde_json::from_str(json).map_err(|e| format!("ISTIO_PROMETHEUS_ANNOTATIONS: {e}"))?;
        let port = match given.port.as_str() {
            "" => 80,
            port => port.parse().ok().filter(|p| *p > 0).ok_or_else(|| {
                format!("ISTIO_PROMETHEUS_ANNOTATIONS: port {port:?} is not a port number")
            })?,
        };
        let path = match given.path.as_str() {
            "" => "/metrics".to_string(),
            path if path.starts_with('/') && !path.chars().any(char::is_whitespace) => {
                path.to_string()
            }
            path => {
                return Err(format!(
                    "ISTIO_PROMETHEUS_ANNOTATIONS: path {path:?} is not an absolute path"
                ));
            }
        };
        Ok(AppMetrics { port, path })
    }
}

/// Envoy's Prometheus text with Istio's names: `envoy_istio_X` is `istio_X`, and an
/// empty label of those series is `unknown`.
pub fn istio_names(envoy: &str) -> String {
    let mut out = String::with_capacity(envoy.len());
    for line in envoy.lines() {
        let renamed = line
            .replacen("# TYPE envoy_istio_", "# TYPE istio_", 1)
            .replacen("# HELP envoy_istio_", "# HELP istio_", 1);
        match renamed.strip_prefix("envoy_istio_") {
            Some(series) => {
                out.push_str("istio_");
                out.push_str(&series.replace("=\"\"", "=\"unknown\""));
            }
            None => out.push_str(&renamed),
        }
        out.push('\n');
    }
    out
}

/// What the status port answers on `/stats/prometheus`: Envoy's metrics, renamed, then
/// the app's own when `app` says where they are (`client` reaches the app; an app that
/// does not answer leaves them out), or why Envoy's could not be read.
pub async fn scrape(admin: &Path, app: Option<(&reqwest::Client, &str)>) -> Result<String, String> {
    let admin = admin.to_path_buf();
    let read = tokio::task::spawn_blocking(move || {
        crate::process::admin_request(&admin, "GET", "/stats/prometheus")
    });
    let mut text = match read.await {
        Ok(Ok((200, text))) => istio_names(&text),
        Ok(Ok((status, _))) => return Err(format!("Envoy's admin answered {status}")),
        Ok(Err(e)) => return Err(format!("Envoy's admin: {e}")),
        Err(e) => return Err(e.to_string()),
    };
    if let Some((client, url)) = app {
        match app_metrics(client, url).await {
            Ok(own) => text.push_str(&own),
            Err(error) => tracing::debug!(%url, %error, "the app's metrics are left out"),
        }
    }
    Ok(text)
}

/// The app's metrics in Prometheus' text format, read up to [`APP_MAX_BYTES`].
async fn app_metrics(client: &reqwest::Client, url: &str) -> Result<String, String> {
    let mut response = client
        .get(url)
        .header("accept", "text/plain;version=0.0.4")
        .timeout(APP_TIMEOUT)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > APP_MAX_BYTES {
            return Err(format!("more than {APP_MAX_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    let mut text = String::from_utf8(body).map_err(|_| "not UTF-8 text".to_string())?;
    // OpenMetrics' end marker would end the merged text early.
    if text.trim_end().ends_with("# EOF") {
        text.truncate(text.trim_end().len() - "# EOF".len());
    }
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_apps_annotations_say_where_its_metrics_are() {
        let parsed = |json| AppMetrics::parse(json);
        assert_eq!(
            parsed(r#"{"scrape":"true","port":"9090","path":"/m"}"#),
            Ok(AppMetrics {
                port: 9090,
                path: "/m".into()
            })
        );
        assert_eq!(
            parsed(r#"{"scrape":"true"}"#),
            Ok(AppMetrics {
                port: 80,
                path: "/metrics".into()
            })
        );
        for (json, error) in [
            (r#"{"port":"http"}"#, "port \"http\" is not a port number"),
            (r#"{"port":"70000"}"#, "port \"70000\" is not a port number"),
            (
                r#"{"path":"metrics"}"#,
                "path \"metrics\" is not an absolute path",
            ),
            (
                r#"{"path":"/a b"}"#,
                "path \"/a b\" is not an absolute path",
            ),
            (r#""scrape""#, "ISTIO_PROMETHEUS_ANNOTATIONS: invalid type"),
        ] {
            let got = parsed(json).unwrap_err();
            assert!(got.contains(error), "{json}: {got}");
        }
    }

    #[test]
    fn istios_series_get_istios_names_and_unknowns() {
        let envoy = "# TYPE envoy_istio_requests_total counter\n\
                     envoy_istio_requests_total{reporter=\"source\",source_app=\"\",response_code=\"200\"} 3\n\
                     # TYPE envoy_cluster_upstream_rq counter\n\
                     envoy_cluster_upstream_rq{envoy_response_code=\"\"} 1\n";
        assert_eq!(
            istio_names(envoy),
            "# TYPE istio_requests_total counter\n\
             istio_requests_total{reporter=\"source\",source_app=\"unknown\",response_code=\"200\"} 3\n\
             # TYPE envoy_cluster_upstream_rq counter\n\
             envoy_cluster_upstream_rq{envoy_response_code=\"\"} 1\n"
        );
    }
}
