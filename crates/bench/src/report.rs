//! The figures of a run (one JSON line per control plane and N) and what is made of them:
//! BENCHMARKS.md tables with the ratio meshd/istiod, and a plot of convergence against N.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Storm {
    /// Until the last sidecar had a complete config; `None` if some never did.
    pub all_complete_s: Option<f64>,
    pub p50_s: Option<f64>,
    pub p99_s: Option<f64>,
    pub complete: usize,
    pub peak_rss_mib: f64,
    pub cpu_s: f64,
    pub reconnects: u64,
    /// What ended a stream, if any did (one sidecar's last error).
    #[serde(default)]
    pub stream_error: Option<String>,
}

/// How long changes took to reach the observing sidecars.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Latency {
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

impl Latency {
    pub fn of(mut latencies: Vec<std::time::Duration>) -> Latency {
        latencies.sort();
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
        Latency {
            p50_ms: percentile(&latencies, 50.0).map(ms),
            p99_ms: percentile(&latencies, 99.0).map(ms),
            max_ms: latencies.last().copied().map(ms),
        }
    }
}

/// The nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[std::time::Duration], p: f64) -> Option<std::time::Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Convergence {
    pub changes: usize,
    pub affected_observers: usize,
    pub samples: usize,
    #[serde(flatten)]
    pub latency: Latency,
    pub cpu_s_per_change: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Churn {
    pub seconds: f64,
    pub scale_changes: usize,
    pub new_endpoints: usize,
    pub endpoints_never_seen: usize,
    pub pushes: u64,
    pub pushes_per_proxy: f64,
    #[serde(flatten)]
    pub latency: Latency,
    pub cpu_s: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    pub control_plane: String,
    pub proxies: usize,
    pub services: usize,
    pub pods: usize,
    pub scoped: bool,
    pub settings: Vec<String>,
    pub storm: Storm,
    pub steady_rss_mib: f64,
    pub route_change: Convergence,
    pub churn: Option<Churn>,
    pub bytes_per_proxy: f64,
}

/// Where and with what the run was made.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Environment {
    pub date: String,
    pub machine: String,
    pub meshd_version: String,
    pub istiod_version: String,
    pub kubernetes: String,
    pub command: String,
}

/// One results file: the environment line, then a line per run.
pub fn read(path: &Path) -> anyhow::Result<(Environment, Vec<RunResult>)> {
    let text = std::fs::read_to_string(path)?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let environment = serde_json::from_str(
        lines
            .next()
            .ok_or_else(|| anyhow::anyhow!("{} is empty", path.display()))?,
    )?;
    let runs = lines
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| anyhow::anyhow!("{} line {}: {e}", path.display(), i + 2))
        })
        .collect::<anyhow::Result<_>>()?;
    Ok((environment, runs))
}

fn cell(v: Option<f64>, digits: usize) -> String {
    v.map_or("—".into(), |v| format!("{v:.digits$}"))
}

fn ratio(meshd: Option<f64>, istiod: Option<f64>) -> String {
    match (meshd, istiod) {
        (Some(m), Some(i)) if i > 0.0 => format!("{:.2}×", m / i),
        _ => "—".into(),
    }
}

type Figure = fn(&RunResult) -> Option<f64>;
type Metric = (&'static str, usize, Figure);

const METRICS: &[Metric] = &[
    ("connect storm: all sidecars have config (s)", 2, |r| {
        r.storm.all_complete_s
    }),
    ("connect storm: p99 time to config (s)", 2, |r| {
        r.storm.p99_s
    }),
    ("connect storm: peak RSS (MiB)", 1, |r| {
        Some(r.storm.peak_rss_mib)
    }),
    ("connect storm: CPU (s)", 2, |r| Some(r.storm.cpu_s)),
    ("steady state: RSS (MiB)", 1, |r| Some(r.steady_rss_mib)),
    ("route change: p50 (ms)", 1, |r| {
        r.route_change.latency.p50_ms
    }),
    ("route change: p99 (ms)", 1, |r| {
        r.route_change.latency.p99_ms
    }),
    ("route change: max (ms)", 1, |r| {
        r.route_change.latency.max_ms
    }),
    ("route change: CPU per change (s)", 3, |r| {
        Some(r.route_change.cpu_s_per_change)
    }),
    ("endpoint churn: pushes per sidecar", 1, |r| {
        r.churn.as_ref().map(|c| c.pushes_per_proxy)
    }),
    ("endpoint churn: p99 (ms)", 1, |r| {
        r.churn.as_ref().and_then(|c| c.latency.p99_ms)
    }),
    ("endpoint churn: CPU (s)", 2, |r| {
        r.churn.as_ref().map(|c| c.cpu_s)
    }),
    ("xDS bytes per sidecar (initial config, KiB)", 1, |r| {
        Some(r.bytes_per_proxy / 1024.0)
    }),
];

/// BENCHMARKS.md.
pub fn markdown(environment: &Environment, runs: &[RunResult], plot: Option<&str>) -> String {
    let mut by_n: BTreeMap<usize, BTreeMap<&str, &RunResult>> = BTreeMap::new();
    for run in runs {
        by_n.entry(run.proxies)
            .or_default()
            .insert(&run.control_plane, run);
    }
    let mut out = String::new();
    let _ = writeln!(out, "# meshd against istiod\n");
    let _ = writeln!(
        out,
        "Made by `{}` on {}; every figure below comes from that one run. Regenerate with the same \
         command (README, \"Benchmarks\").\n",
        environment.command, environment.date
    );
    let _ = writeln!(out, "- Machine: {}", environment.machine);
    let _ = writeln!(out, "- meshd: {}", environment.meshd_version);
    let _ = writeln!(out, "- istiod: {}", environment.istiod_version);
    let _ = writeln!(out, "- Kubernetes: {}", environment.kubernetes);
    if let Some(first) = runs.first() {
        let _ = writeln!(
            out,
            "- Workload: {} services × {} endpoints ({} kwok pods), a VirtualService and a \
             DestinationRule per 10 services, in the same local cluster for both",
            first.services,
            first.pods / first.services.max(1),
            first.pods
        );
    }
    let _ = writeln!(
        out,
        "- Each control plane runs alone, pinned to core 0; the simulated sidecars (one ADS stream \
         and one connection each, state of the world, ACKing every push) run on core 1.\n"
    );
    for plane in ["istiod", "meshd"] {
        if let Some(run) = runs.iter().find(|r| r.control_plane == plane) {
            let _ = writeln!(
                out,
                "Non-default settings of {plane}: {}.\n",
                run.settings.join("; ")
            );
        }
    }
    let _ = writeln!(
        out,
        "How the figures are taken: a route change is timed from the PATCH of the \
         VirtualService to the push that carries the new match; an endpoint from the moment \
         the benchmark's own watch sees it ready in an EndpointSlice to the EDS push that \
         holds it (both as received by the observing sidecars, at most 500 spread over all); \
         bytes are the protobuf size of the responses. The load generator has one core for \
         all N sidecars: at 10,000 it decodes every push of every sidecar, so churn latency \
         there is partly its own (see the control plane's CPU beside it).\n"
    );
    if let Some(plot) = plot {
        let _ = writeln!(out, "![convergence against N]({plot})\n");
    }
    for (n, planes) in &by_n {
        let scoped = planes.values().any(|r| r.scoped);
        let _ = writeln!(
            out,
            "## {n} sidecars{}\n",
            if scoped {
                " (namespace-scoped Sidecar resources)"
            } else {
                ""
            }
        );
        let _ = writeln!(
            out,
            "| | istiod | meshd | meshd/istiod |\n|---|---:|---:|---:|"
        );
        for (name, digits, get) in METRICS {
            let istiod = planes.get("istiod").and_then(|r| get(r));
            let meshd = planes.get("meshd").and_then(|r| get(r));
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {} |",
                cell(istiod, *digits),
                cell(meshd, *digits),
                ratio(meshd, istiod)
            );
        }
        let _ = writeln!(out);
        for (plane, run) in planes {
            let _ = writeln!(out, "- {plane}: {}.", run_notes(run).join("; "));
        }
        let _ = writeln!(out);
    }
    out
}

/// What a run's table leaves out: incomplete configs, reopened streams, how many samples
/// the route change and churn figures come from.
fn run_notes(run: &RunResult) -> Vec<String> {
    let s = &run.storm;
    let mut notes = Vec::new();
    if s.complete < run.proxies {
        notes.push(format!(
            "only {} of {} sidecars got a complete config",
            s.complete, run.proxies
        ));
    }
    if s.reconnects > 0 {
        notes.push(format!(
            "{} streams ended and were reopened during the storm (e.g. `{}`)",
            s.reconnects,
            s.stream_error.as_deref().unwrap_or("?")
        ));
    }
    let r = &run.route_change;
    notes.push(format!(
        "route change reached {} observing sidecars ({} samples over {} changes)",
        r.affected_observers, r.samples, r.changes
    ));
    if let Some(c) = &run.churn {
        notes.push(format!(
            "churn: {} scale changes in {:.0} s, {} new endpoints ({} never seen), {} pushes",
            c.scale_changes, c.seconds, c.new_endpoints, c.endpoints_never_seen, c.pushes
        ));
    }
    notes
}

/// Two panels against N (log scale): time until every sidecar has config after a connect
/// storm, and route-change p99.
pub fn plot(runs: &[RunResult], path: &Path, font: &Path) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let bytes: &'static [u8] = Box::leak(std::fs::read(font)?.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow::anyhow!("{} is not a font plotters can use", font.display()))?;
    let root = BitMapBackend::new(path, (1200, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((1, 2));
    let series = |plane: &str, get: Figure| -> Vec<(f64, f64)> {
        let mut points: Vec<(f64, f64)> = runs
            .iter()
            .filter(|r| r.control_plane == plane)
            .filter_map(|r| Some((r.proxies as f64, get(r)?)))
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        points
    };
    let charts: [(&str, Figure); 2] = [
        ("connect storm: s until all sidecars have config", |r| {
            r.storm.all_complete_s
        }),
        ("route change: p99 ms until sidecars have it", |r| {
            r.route_change.latency.p99_ms
        }),
    ];
    for (panel, (title, get)) in panels.iter().zip(charts) {
        let all: Vec<(f64, f64)> = ["istiod", "meshd"]
            .iter()
            .flat_map(|p| series(p, get))
            .collect();
        let max_x = all.iter().map(|p| p.0).fold(10.0, f64::max) * 1.5;
        let min_x = all
            .iter()
            .map(|p| p.0)
            .fold(f64::INFINITY, f64::min)
            .min(max_x)
            / 1.5;
        let max_y = all.iter().map(|p| p.1).fold(0.001, f64::max) * 1.1;
        let mut chart = ChartBuilder::on(panel)
            .caption(title, ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d((min_x..max_x).log_scale(), 0.0..max_y)?;
        chart
            .configure_mesh()
            .x_desc("sidecars (N)")
            .label_style(("sans-serif", 14))
            .draw()?;
        for (plane, color) in [("istiod", RED), ("meshd", BLUE)] {
            let points = series(plane, get);
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
                .label(plane)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            chart.draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 4, color.filled())),
            )?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&values, 50.0), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&values, 99.0), Some(Duration::from_millis(99)));
        assert_eq!(
            percentile(&values[..1], 99.0),
            Some(Duration::from_millis(1))
        );
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn the_committed_results_still_load() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/bench-results.jsonl");
        let (_, runs) = read(&path).unwrap();
        let meshd = runs.iter().find(|r| r.control_plane == "meshd").unwrap();
        assert!(meshd.route_change.latency.p99_ms.is_some());
        assert!(meshd.churn.as_ref().unwrap().latency.p50_ms.is_some());
    }
}
