//! The metrics as Prometheus' text format (0.0.4) exposes them, which is how istiod's
//! are scraped: a counter's samples carry the family's own name (`pilot_xds_pushes`),
//! where OpenMetrics, what the metrics library writes, appends `_total`. Istio's
//! dashboards and alerts query the names without it.

/// The content type of [`prometheus_text`].
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `openmetrics` (the library's encoding) in Prometheus' text format: counters' samples
/// named as their family, no `# UNIT` or `# EOF` lines; everything else as it is.
pub fn prometheus_text(openmetrics: &str) -> String {
    let mut counters: Vec<&str> = Vec::new();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(family) = line
            .strip_prefix("# TYPE ")
            .and_then(|rest| rest.strip_suffix(" counter"))
        {
            counters.push(family);
        }
        let renamed = counters.iter().find_map(|family| {
            let rest = line.strip_prefix(family)?.strip_prefix("_total")?;
            rest.starts_with(['{', ' '])
                .then(|| format!("{family}{rest}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Metrics;
    use prometheus_client::registry::Registry;

    #[test]
    fn counters_are_named_as_istiod_names_them() {
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        let _ = metrics.version_label("1.28.0");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let exposed = prometheus_text(&text);
        for line in [
            "# TYPE pilot_xds_pushes counter",
            "pilot_xds_pushes{type=\"cds\"} 0",
            "pilot_total_xds_rejects{type=\"rds\"} 0",
            "pilot_xds_pushed_bytes{type=\"eds\"} 0",
            "# TYPE pilot_proxy_convergence_time histogram",
        ] {
            assert!(exposed.lines().any(|l| l == line), "{line}:\n{exposed}");
        }
        assert!(
            !exposed.contains("_total{") && !exposed.contains("# EOF"),
            "{exposed}"
        );
        // Gauges and histograms are as they were.
        assert!(
            exposed.contains("pilot_proxy_convergence_time_count 0"),
            "{exposed}"
        );
    }
}
