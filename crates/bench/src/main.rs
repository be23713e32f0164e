//! fleetmesh-bench: meshd and istiod side by side on the same cluster, workload and
//! simulated sidecars. `scripts/bench-vs-istiod` builds everything and runs it; see
//! BENCHMARKS.md for what it measured.

mod control_plane;
mod fleet;
mod idle;
mod report;
mod scenarios;
mod sidecar;
mod workload;
mod xds_names;

use anyhow::Context;
use clap::{Parser, Subcommand};
use control_plane::Kind;
use sidecar::Protocol;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    version,
    about = "Benchmarks meshd against istiod: connect storm, steady state, route change, endpoint churn, bytes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Creates the workload in the cluster, then runs every scenario for each control plane
    /// and number of sidecars, appending one JSON line per run to --results.
    Run(Box<RunArgs>),
    /// Writes BENCHMARKS.md and the plot from a results file.
    Report(ReportArgs),
    /// Scale to zero: N registered meshes on one meshd, most idle; memory, watches, and
    /// the time from a sleeping mesh's first proxy to its complete config.
    Idle(idle::IdleArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// The benchmark cluster (a local one: its pods get addresses that exist only in the API).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// meshd's binary (a release build).
    #[arg(long)]
    meshd: PathBuf,
    /// istiod's binary (pilot-discovery, from scripts/istio-build).
    #[arg(long)]
    istiod: PathBuf,
    /// Istio's CRDs (crd-all.gen.yaml, from scripts/istio-build), installed for both.
    #[arg(long)]
    istio_crds: PathBuf,
    /// istiod's version: the sidecars claim it (istiod gates features on it).
    #[arg(long, default_value = "1.31-dev")]
    istio_version: String,
    /// meshd's version, for the report.
    #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
    meshd_version: String,
    #[arg(long, value_delimiter = ',', default_value = "istiod,meshd")]
    control_planes: Vec<Kind>,
    /// How the sidecars get config, a run each: sotw (state of the world), delta, and
    /// on-demand (meshd --on-demand-routes; istiod has no such mode and skips it).
    #[arg(long, value_delimiter = ',', default_value = "sotw,delta,on-demand")]
    protocols: Vec<sidecar::Protocol>,
    /// Numbers of simulated sidecars, one run each.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,2000,10000")]
    proxies: Vec<usize>,
    /// From this many sidecars on, every namespace gets a Sidecar resource scoping it to
    /// itself (as Istio recommends at scale).
    #[arg(long, default_value_t = 10_000)]
    scoped_from: usize,
    #[arg(long, default_value_t = 1000)]
    services: usize,
    #[arg(long, default_value_t = 2)]
    endpoints: usize,
    #[arg(long, default_value_t = 20)]
    namespaces: usize,
    /// Sidecars that check each push for the change being timed (evenly spread).
    #[arg(long, default_value_t = 500)]
    observers: usize,
    #[arg(long, default_value_t = 5)]
    route_changes: usize,
    /// Seconds of endpoint churn (0 skips it).
    #[arg(long, default_value_t = 60)]
    churn_seconds: u64,
    /// One Deployment scaled up (and an earlier one down) per this many milliseconds.
    #[arg(long, default_value_t = 1000)]
    churn_interval_ms: u64,
    /// Give up on a connect storm after this many seconds.
    #[arg(long, default_value_t = 600)]
    storm_timeout_seconds: u64,
    /// The core the control plane is pinned to (run this program on another).
    #[arg(long, default_value_t = 0)]
    control_plane_core: usize,
    #[arg(long, default_value = "target/bench")]
    work_dir: PathBuf,
    /// Results file (JSON lines), written anew.
    #[arg(long, default_value = "target/bench/results.jsonl")]
    results: PathBuf,
    /// The Kubernetes version, for the report.
    #[arg(long, default_value = "")]
    kubernetes_version: String,
    /// The command that made the run, for the report.
    #[arg(long, default_value = "scripts/bench-vs-istiod")]
    command: String,
}

#[derive(clap::Args)]
struct ReportArgs {
    #[arg(long, default_value = "target/bench/results.jsonl")]
    results: PathBuf,
    #[arg(long, default_value = "BENCHMARKS.md")]
    markdown: PathBuf,
    /// What `scripts/bench-idle` printed, added as its own section if present.
    #[arg(long, default_value = "docs/bench-idle.txt")]
    idle_results: PathBuf,
    /// What `scripts/bench-envoy-memory` printed, added as its own section if present.
    #[arg(long, default_value = "docs/bench-envoy-memory.txt")]
    envoy_memory_results: PathBuf,
    /// The plot (PNG); BENCHMARKS.md links it relative to itself.
    #[arg(long, default_value = "docs/bench-convergence.png")]
    plot: PathBuf,
    #[arg(
        long,
        default_value = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
    )]
    font: PathBuf,
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim())
        .to_string();
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let memory = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(String::new(), |kib| {
            format!(", {:.0} GiB", kib as f64 / 1024.0 / 1024.0)
        });
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cores} × {model}{memory}, Linux {}", kernel.trim())
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    raise_open_files_limit();
    let client = kube::Client::try_from(fleetmesh_kube::client_config(&args.kubeconfig).await?)?;
    let shape = workload::Shape {
        services: args.services,
        endpoints: args.endpoints,
        namespaces: args.namespaces,
        routes_every: 10,
    };
    let crds = std::fs::read_to_string(&args.istio_crds)
        .with_context(|| format!("reading {}", args.istio_crds.display()))?;
    eprintln!(
        "workload: {} services × {} endpoints in {} namespaces",
        shape.services, shape.endpoints, shape.namespaces
    );
    workload::create(&client, &shape, &crds).await?;

    if let Some(dir) = args.results.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut results = std::fs::File::create(&args.results)?;
    let environment = report::Environment {
        date: std::process::Command::new("date")
            .arg("-u")
            .arg("+%Y-%m-%d %H:%M UTC")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default(),
        machine: machine(),
        meshd_version: args.meshd_version.clone(),
        istiod_version: args.istio_version.clone(),
        kubernetes: args.kubernetes_version.clone(),
        command: args.command.clone(),
    };
    writeln!(results, "{}", serde_json::to_string(&environment)?)?;
    let mut scoped = None;
    for &proxies in &args.proxies {
        let want_scoped = proxies >= args.scoped_from;
        if scoped != Some(want_scoped) {
            workload::scope_sidecars(&client, &shape, want_scoped).await?;
            scoped = Some(want_scoped);
        }
        let runs = args.protocols.iter().flat_map(|&protocol| {
            args.control_planes
                .iter()
                .filter(move |&&kind| !(kind == Kind::Istiod && protocol == Protocol::OnDemand))
                .map(move |&kind| (protocol, kind))
        });
        for (protocol, kind) in runs {
            let plan = scenarios::Plan {
                shape,
                proxies,
                observers: args.observers,
                route_changes: args.route_changes,
                churn: Duration::from_secs(args.churn_seconds),
                churn_interval: Duration::from_millis(args.churn_interval_ms),
                storm_timeout: Duration::from_secs(args.storm_timeout_seconds),
                proxy_version: args.istio_version.clone(),
                scoped: want_scoped,
                protocol,
            };
            let binary = match kind {
                Kind::Meshd => &args.meshd,
                Kind::Istiod => &args.istiod,
            };
            let result = scenarios::run(
                kind,
                binary,
                &args.kubeconfig,
                &client,
                args.control_plane_core,
                &args.work_dir,
                &plan,
            )
            .await?;
            writeln!(results, "{}", serde_json::to_string(&result)?)?;
            results.flush()?;
        }
    }
    Ok(())
}

/// Ten thousand sidecars need ten thousand sockets.
fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

fn write_report(args: ReportArgs) -> anyhow::Result<()> {
    let (environment, runs) = report::read(&args.results)?;
    if let Some(dir) = args.plot.parent() {
        std::fs::create_dir_all(dir)?;
    }
    report::plot(&runs, &args.plot, &args.font)?;
    let base = args.markdown.parent().unwrap_or(std::path::Path::new(""));
    let link = args
        .plot
        .strip_prefix(base)
        .unwrap_or(&args.plot)
        .display()
        .to_string();
    let mut markdown = report::markdown(&environment, &runs, Some(&link));
    // The scale-to-zero figures, as `scripts/bench-idle` last wrote them.
    if let Ok(idle) = std::fs::read_to_string(&args.idle_results) {
        markdown.push_str(&format!(
            "\n# Scale to zero: many meshes on one meshd\n\nFrom `{}` (`scripts/bench-idle`, README \"Benchmarks\"):\n\n```text\n{}```\n",
            args.idle_results.display(),
            idle
        ));
    }
    // A real Envoy's memory, everything pushed or routes on demand.
    if let Ok(table) = std::fs::read_to_string(&args.envoy_memory_results) {
        let (header, table) = table.split_once('\n').unwrap_or(("", &table));
        markdown.push_str(&format!(
            "\n# What a real Envoy sidecar holds\n\nFrom `{}` (`scripts/bench-envoy-memory`, README \"Benchmarks\"; {}). \
             Each mesh: N services, each with an endpoint, a VirtualService per 10; three sidecars (real Envoy, one worker) \
             each call the same 10 services. *All pushed*: every virtual host and cluster, as istiod sends them; \
             *on demand*: meshd `--on-demand-routes`, virtual hosts and the clusters of HTTP ports fetched when first called. \
             RSS from /proc once settled; bytes as meshd sent them, divided over the four proxies.\n\n{}",
            args.envoy_memory_results.display(),
            header.trim_start_matches("# "),
            table
        ));
    }
    std::fs::write(&args.markdown, markdown)?;
    eprintln!(
        "wrote {} and {}",
        args.markdown.display(),
        args.plot.display()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run(args) => run(*args).await,
        Command::Report(args) => write_report(args),
        Command::Idle(args) => idle::run(args).await,
    }
}
