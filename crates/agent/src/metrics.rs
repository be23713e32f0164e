//! The workload's metrics as Prometheus scrapes them from Istio's agent
//! (`:15020/stats/prometheus`): Envoy's, with Istio's standard series under Istio's names.
//! meshd's config has Envoy count them (`fleetmesh_xds::telemetry`), from labels Envoy
//! reads in its environment (`WorkloadIdentity::envoy_environment`); Envoy's Prometheus text calls them
//! `envoy_istio_*` and leaves unknown labels empty, where Istio says `istio_*` and
//! `unknown`.

use std::path::Path;

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

/// What the status port answers on `/stats/prometheus`: Envoy's metrics, renamed, or
/// why they could not be read.
pub async fn scrape(admin: &Path) -> Result<String, String> {
    let admin = admin.to_path_buf();
    let read = tokio::task::spawn_blocking(move || {
        crate::process::admin_request(&admin, "GET", "/stats/prometheus")
    });
    match read.await {
        Ok(Ok((200, text))) => Ok(istio_names(&text)),
        Ok(Ok((status, _))) => Err(format!("Envoy's admin answered {status}")),
        Ok(Err(e)) => Err(format!("Envoy's admin: {e}")),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
