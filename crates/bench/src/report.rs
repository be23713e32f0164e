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
    /// How the sidecars got config (`sidecar::Protocol::name`); runs before there was a
    /// choice were state of the world.
    #[serde(default = "state_of_the_world")]
    pub protocol: String,
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

fn state_of_the_world() -> String {
    "sotw".into()
}

impl RunResult {
    /// Whether every sidecar got a complete config in the connect storm. When not, what
    /// was measured after it is not comparable: the control plane's core was still busy
    /// with the storm, and some sidecars had nothing to update.
    fn storm_finished(&self) -> bool {
        self.storm.all_complete_s.is_some()
    }
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
/// A table row: its name, digits, the figure, and whether it stands when the connect storm
/// did not finish (only what the storm itself cost).
type Metric = (&'static str, usize, Figure, bool);

const METRICS: &[Metric] = &[
    (
        "connect storm: all sidecars have config (s)",
        2,
        |r| r.storm.all_complete_s,
        false,
    ),
    (
        "connect storm: p99 time to config (s)",
        2,
        |r| r.storm.p99_s,
        false,
    ),
    (
        "connect storm: peak RSS (MiB)",
        1,
        |r| Some(r.storm.peak_rss_mib),
        true,
    ),
    ("connect storm: CPU (s)", 2, |r| Some(r.storm.cpu_s), true),
    (
        "steady state: RSS (MiB)",
        1,
        |r| Some(r.steady_rss_mib),
        false,
    ),
    (
        "route change: p50 (ms)",
        1,
        |r| r.route_change.latency.p50_ms,
        false,
    ),
    (
        "route change: p99 (ms)",
        1,
        |r| r.route_change.latency.p99_ms,
        false,
    ),
    (
        "route change: max (ms)",
        1,
        |r| r.route_change.latency.max_ms,
        false,
    ),
    (
        "route change: CPU per change (s)",
        3,
        |r| Some(r.route_change.cpu_s_per_change),
        false,
    ),
    (
        "endpoint churn: pushes per sidecar",
        1,
        |r| r.churn.as_ref().map(|c| c.pushes_per_proxy),
        false,
    ),
    (
        "endpoint churn: p99 (ms)",
        1,
        |r| r.churn.as_ref().and_then(|c| c.latency.p99_ms),
        false,
    ),
    (
        "endpoint churn: CPU (s)",
        2,
        |r| r.churn.as_ref().map(|c| c.cpu_s),
        false,
    ),
    (
        "xDS bytes per sidecar (initial config, KiB)",
        1,
        |r| Some(r.bytes_per_proxy / 1024.0),
        false,
    ),
];

/// The heading of a protocol's tables, and the istiod protocol its meshd figures are
/// compared with (istiod has no routes on demand: it sends everything, over delta).
fn protocol_section(protocol: &str) -> (&'static str, &'static str) {
    match protocol {
        "delta" => ("delta xDS", "delta"),
        "on-demand" => (
            "meshd with routes on demand, against istiod on delta xDS",
            "delta",
        ),
        _ => ("state of the world", "sotw"),
    }
}

/// The order of the protocols' tables.
fn protocol_rank(protocol: &str) -> usize {
    match protocol {
        "sotw" => 0,
        "delta" => 1,
        _ => 2,
    }
}

/// The runs of one N and protocol, by (control plane, protocol).
type Runs<'a> = BTreeMap<(&'a str, &'a str), &'a RunResult>;

/// BENCHMARKS.md.
pub fn markdown(environment: &Environment, runs: &[RunResult], plot: Option<&str>) -> String {
    let mut by_n: BTreeMap<(usize, usize), Runs> = BTreeMap::new();
    for run in runs {
        by_n.entry((run.proxies, protocol_rank(&run.protocol)))
            .or_default()
            .insert((&run.control_plane, &run.protocol), run);
    }
    let mut out = preamble(environment, runs);
    if let Some(plot) = plot {
        let _ = writeln!(out, "![convergence against N]({plot})\n");
    }
    for (&(n, _), planes) in &by_n {
        let Some(protocol) = planes.keys().map(|(_, p)| *p).next() else {
            continue;
        };
        let compared_with = protocol_section(protocol).1;
        let istiod = by_n
            .get(&(n, protocol_rank(compared_with)))
            .and_then(|p| p.get(&("istiod", compared_with)))
            .copied();
        table(&mut out, n, planes, istiod);
    }
    out
}

/// Where, with what and how the figures were taken.
fn preamble(environment: &Environment, runs: &[RunResult]) -> String {
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
        "- Pinning: the control plane under test runs alone on core 0 (`taskset`); everything \
         else shares core 1: the simulated sidecars (one ADS stream and one connection each, \
         ACKing every push), the API server, etcd, kwok and the controller manager \
         (`scripts/bench-vs-istiod` pins them there once the cluster is up).\n"
    );
    let _ = writeln!(
        out,
        "- Protocols: *state of the world* (Istio's default), *delta* (Istio's agent with \
         `ISTIO_DELTA_XDS=true`), and *on demand* (meshd `--on-demand-routes`: a sidecar \
         holds no outbound virtual hosts or HTTP clusters until its app calls a host; each \
         simulated app calls 10 services, service 0 among them, whose route the route change \
         edits). Endpoint churn is not run on demand (a sidecar holds only the endpoints of \
         the services it calls).\n"
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
    let _ = writeln!(out, "What each sends that the other does not:\n");
    for feature in crate::control_plane::FEATURES {
        let _ = writeln!(out, "- {feature}");
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "How the figures are taken: a route change is timed from the PATCH of the \
         VirtualService to the push that carries the new match; an endpoint from the moment \
         the benchmark's own watch sees it ready in an EndpointSlice to the EDS push that \
         holds it (both as received by the observing sidecars, at most 500 spread over all); \
         bytes are the protobuf size of the responses. The load generator has one core for \
         all N sidecars: at 10,000 it decodes every push of every sidecar, so churn latency \
         there is partly its own (see the control plane's CPU beside it). A control plane \
         whose connect storm did not finish gets \"—\" for every figure after it, and no \
         ratios: its core was still saturated by the storm.\n"
    );
    out
}

/// The table of `n` sidecars on one protocol: meshd's run among `planes`, against `istiod`.
fn table(out: &mut String, n: usize, planes: &Runs, istiod: Option<&RunResult>) {
    let Some(protocol) = planes.keys().map(|(_, p)| *p).next() else {
        return;
    };
    let title = protocol_section(protocol).0;
    let meshd = planes.get(&("meshd", protocol)).copied();
    let scoped = planes.values().any(|r| r.scoped);
    let _ = writeln!(
        out,
        "## {n} sidecars, {title}{}\n",
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
    let comparable =
        istiod.is_none_or(RunResult::storm_finished) && meshd.is_none_or(RunResult::storm_finished);
    for (name, digits, get, stands) in METRICS {
        let figure =
            |run: Option<&RunResult>| run.filter(|r| *stands || r.storm_finished()).and_then(get);
        let (i, m) = (figure(istiod), figure(meshd));
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} |",
            cell(i, *digits),
            cell(m, *digits),
            if comparable {
                ratio(m, i)
            } else {
                "—".into()
            }
        );
    }
    let _ = writeln!(out);
    for run in [istiod, meshd].into_iter().flatten() {
        let _ = writeln!(
            out,
            "- {} ({}): {}.",
            run.control_plane,
            protocol_section(&run.protocol).0,
            run_notes(run).join("; ")
        );
    }
    let _ = writeln!(out);
}

/// What a run's table leaves out: incomplete configs, reopened streams, how many samples
/// the route change and churn figures come from.
fn run_notes(run: &RunResult) -> Vec<String> {
    let s = &run.storm;
    let mut notes = Vec::new();
    if s.complete < run.proxies {
        notes.push(format!(
            "the connect storm did not finish: only {} of {} sidecars got a complete config \
             (figures after it are left out)",
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
    // A line per control plane and protocol: (plane, protocol, label, colour).
    let lines = [
        ("istiod", "sotw", "istiod", RED),
        ("meshd", "sotw", "meshd", BLUE),
        ("istiod", "delta", "istiod, delta", MAGENTA),
        ("meshd", "delta", "meshd, delta", CYAN),
        ("meshd", "on-demand", "meshd, on demand", GREEN),
    ];
    let series = |(plane, protocol): (&str, &str), get: Figure| -> Vec<(f64, f64)> {
        let mut points: Vec<(f64, f64)> = runs
            .iter()
            .filter(|r| r.control_plane == plane && r.protocol == protocol)
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
        let all: Vec<(f64, f64)> = lines
            .iter()
            .flat_map(|(plane, protocol, ..)| series((plane, protocol), get))
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
        for (plane, protocol, label, color) in lines {
            let points = series((plane, protocol), get);
            if points.is_empty() {
                continue;
            }
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
                .label(label)
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

    fn run(plane: &str, protocol: &str, finished: bool) -> RunResult {
        RunResult {
            control_plane: plane.into(),
            protocol: protocol.into(),
            proxies: 2000,
            services: 1000,
            pods: 2000,
            scoped: false,
            settings: vec![],
            storm: Storm {
                all_complete_s: finished.then_some(8.0),
                p50_s: Some(4.0),
                p99_s: Some(7.5),
                complete: if finished { 2000 } else { 1731 },
                peak_rss_mib: 300.0,
                cpu_s: 6.0,
                reconnects: 0,
                stream_error: None,
            },
            steady_rss_mib: 250.0,
            route_change: Convergence {
                changes: 3,
                affected_observers: 500,
                samples: 1500,
                latency: Latency {
                    p50_ms: Some(100.0),
                    p99_ms: Some(200.0),
                    max_ms: Some(210.0),
                },
                cpu_s_per_change: 1.0,
            },
            churn: None,
            bytes_per_proxy: 2048.0,
        }
    }

    fn environment() -> Environment {
        Environment {
            date: "today".into(),
            machine: "m".into(),
            meshd_version: "v".into(),
            istiod_version: "v".into(),
            kubernetes: "v".into(),
            command: "c".into(),
        }
    }

    fn row<'a>(markdown: &'a str, section: &str, name: &str) -> Vec<&'a str> {
        let section = &markdown[markdown.find(section).unwrap()..];
        let line = section
            .lines()
            .find(|l| l.starts_with(&format!("| {name} |")));
        line.unwrap().split('|').map(str::trim).collect()
    }

    #[test]
    fn a_storm_that_did_not_finish_leaves_out_what_came_after_it_and_every_ratio() {
        let runs = [run("istiod", "sotw", false), run("meshd", "sotw", true)];
        let text = markdown(&environment(), &runs, None);
        let p99 = row(&text, "## 2000 sidecars", "route change: p99 (ms)");
        assert_eq!(p99[2..5], ["—", "200.0", "—"]);
        let rss = row(&text, "## 2000 sidecars", "connect storm: peak RSS (MiB)");
        assert_eq!(rss[2..5], ["300.0", "300.0", "—"]);
        assert!(text.contains("only 1731 of 2000 sidecars got a complete config"));
    }

    #[test]
    fn on_demand_is_compared_with_istiod_on_delta() {
        let mut istiod = run("istiod", "delta", true);
        istiod.route_change.latency.p99_ms = Some(800.0);
        let runs = [
            istiod,
            run("meshd", "delta", true),
            run("meshd", "on-demand", true),
        ];
        let text = markdown(&environment(), &runs, None);
        let on_demand = row(&text, "routes on demand, against", "route change: p99 (ms)");
        assert_eq!(on_demand[2..5], ["800.0", "200.0", "0.25×"]);
        assert!(text.find("## 2000 sidecars, delta xDS") < text.find("routes on demand, against"));
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
