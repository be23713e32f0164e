//! The control plane under test, meshd or istiod, run as a process of its own on one core
//! (`taskset`), every port on 127.0.0.1, against the benchmark cluster; and its memory
//! and CPU, read from /proc.

use crate::sidecar::Protocol;
use anyhow::{Context, bail};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Meshd,
    Istiod,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Meshd => "meshd",
            Kind::Istiod => "istiod",
        }
    }
}

impl std::str::FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Kind, String> {
        match s {
            "meshd" => Ok(Kind::Meshd),
            "istiod" => Ok(Kind::Istiod),
            other => Err(format!("unknown control plane {other:?} (meshd or istiod)")),
        }
    }
}

/// The cluster id both control planes are given, and the sidecars claim.
pub const CLUSTER_ID: &str = "Kubernetes";

/// The command-line options a control plane gets for sidecars speaking `protocol`.
pub fn options(kind: Kind, protocol: Protocol) -> Vec<String> {
    match (kind, protocol) {
        (Kind::Meshd, Protocol::OnDemand) => vec!["--on-demand-routes".into()],
        _ => Vec::new(),
    }
}

/// istiod's MeshConfig, written for it (`--meshConfig`): what it emits that meshd does
/// not is turned off, so that both send the same features (see [`FEATURES`]).
pub const ISTIOD_MESH_CONFIG: &str = "\
# Written by fleetmesh-bench. Everything else is istiod's default.
# meshd emits no tracing config: neither does istiod then.
enableTracing: false
# Neither writes an access log (istiod's default too, stated).
accessLogFile: \"\"
";

/// What the two control planes put into a sidecar's config differently, for the report.
pub const FEATURES: &[&str] = &[
    "both emit Istio's standard metrics on every HTTP and TCP filter chain (istiod with its \
     `istio.stats` filters, meshd with Envoy's stats access logger) and no tracing or access log",
    "istiod adds its metadata-exchange filters (`istio.metadata_exchange`) and per-cluster \
     metadata for them; meshd sends the client's workload in `x-fleetmesh-peer-*` headers \
     (a header mutation per route) instead",
    "meshd's routes on demand (`--on-demand-routes`) have no istiod equivalent: its rows \
     compare with istiod's delta rows",
];

/// Every setting either side runs with that differs from its default, for the report.
pub fn non_default_settings(kind: Kind, options: &[String]) -> Vec<String> {
    let common = ["pinned to one core (taskset)", "ports on 127.0.0.1"];
    let own: &[&str] = match kind {
        Kind::Meshd => &["--cluster-id Kubernetes"],
        Kind::Istiod => &[
            "PILOT_MAX_REQUESTS_PER_SECOND=100000 (default min(15+5xGOMAXPROCS,100)/s would throttle the connect storm)",
            "ENABLE_CA_SERVER=false (meshd's CA stays on: it serves its own TLS port)",
            "INJECTION_WEBHOOK_CONFIG_NAME= VALIDATION_WEBHOOK_CONFIG_NAME= (no webhook patching)",
            "MeshConfig: enableTracing false, accessLogFile \"\" (written, `--meshConfig`)",
        ],
    };
    common
        .iter()
        .chain(own)
        .map(|s| s.to_string())
        .chain(options.iter().cloned())
        .collect()
}

pub struct ControlPlane {
    pub kind: Kind,
    pub xds_address: SocketAddr,
    /// Metrics, debug endpoints and (meshd) the management API.
    pub http_address: SocketAddr,
    /// meshd's token key directory (its sidecars need tokens).
    pub ca_dir: Option<PathBuf>,
    /// meshd's state directory (its admin token).
    pub state_dir: Option<PathBuf>,
    child: Child,
    pid: u32,
}

/// Whom the control plane serves.
#[derive(Debug, Clone)]
pub enum Serves<'a> {
    /// The cluster of this kubeconfig.
    Cluster(&'a Path),
    /// (meshd) a fleet: the clusters registered with it; members idle for this long
    /// scale to zero. `restart`: keep the state of the last run (its registrations).
    Fleet { idle_after: Duration, restart: bool },
}

/// Memory and CPU of the control plane process.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub rss_bytes: u64,
    /// The highest RSS since it started (VmHWM).
    pub peak_rss_bytes: u64,
    pub cpu: Duration,
}

fn free_address() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

impl ControlPlane {
    /// Starts `binary` on `core`, logging to `work_dir/KIND.log`, and waits until it
    /// answers its readiness endpoint.
    pub async fn start(
        kind: Kind,
        binary: &Path,
        serves: Serves<'_>,
        options: &[String],
        core: usize,
        work_dir: &Path,
    ) -> anyhow::Result<ControlPlane> {
        // It runs in a directory of its own: every path it gets must be absolute.
        let binary = std::fs::canonicalize(binary)
            .with_context(|| format!("no control plane binary at {}", binary.display()))?;
        let kubeconfig = match serves {
            Serves::Cluster(path) => Some(std::fs::canonicalize(path)?),
            Serves::Fleet { .. } => None,
        };
        let kubeconfig = kubeconfig.as_deref().unwrap_or(Path::new(""));
        std::fs::create_dir_all(work_dir)?;
        let dir = std::fs::canonicalize(work_dir)?.join(kind.name());
        if !matches!(serves, Serves::Fleet { restart: true, .. }) {
            let _ = std::fs::remove_dir_all(&dir);
        }
        std::fs::create_dir_all(&dir)?;
        let xds = free_address()?;
        let http = free_address()?;
        let mut command = Command::new("taskset");
        command.arg("-c").arg(core.to_string()).arg(&binary);
        let mut ca_dir = None;
        let mut state_dir = None;
        match kind {
            Kind::Meshd => {
                let config_dir = dir.join("mesh");
                std::fs::create_dir_all(&config_dir)?;
                match serves {
                    Serves::Cluster(_) => command.arg("--kubeconfig").arg(kubeconfig),
                    // Its members are local clusters on loopback.
                    Serves::Fleet { idle_after, .. } => command
                        .arg(format!("--idle-after={}ms", idle_after.as_millis()))
                        .arg("--tenant-egress-deny="),
                };
                command
                    .arg("--config-dir")
                    .arg(&config_dir)
                    .arg("--ca-dir")
                    .arg(dir.join("ca"))
                    .arg("--state-dir")
                    .arg(dir.join("state"))
                    .args(["--cluster-id", CLUSTER_ID])
                    .arg(format!("--xds-address={xds}"))
                    .arg(format!("--http-address={http}"))
                    .arg(format!("--webhook-address={}", free_address()?))
                    .arg(format!("--xds-tls-address={}", free_address()?))
                    .args(options);
                ca_dir = Some(dir.join("ca"));
                state_dir = Some(dir.join("state"));
            }
            Kind::Istiod => {
                std::fs::write(dir.join("mesh.yaml"), ISTIOD_MESH_CONFIG)?;
                command
                    .arg("discovery")
                    .arg("--kubeconfig")
                    .arg(kubeconfig)
                    .args(["--clusterID", CLUSTER_ID, "--domain", "cluster.local"])
                    .arg(format!("--grpcAddr={xds}"))
                    .arg(format!("--httpAddr={http}"))
                    .arg(format!("--monitoringAddr={}", free_address()?))
                    .arg(format!("--httpsAddr={}", free_address()?))
                    .arg("--secureGRPCAddr=")
                    .arg("--meshConfig")
                    .arg(dir.join("mesh.yaml"))
                    .env("ENABLE_CA_SERVER", "false")
                    .env("INJECTION_WEBHOOK_CONFIG_NAME", "")
                    .env("VALIDATION_WEBHOOK_CONFIG_NAME", "")
                    .env("PILOT_MAX_REQUESTS_PER_SECOND", "100000")
                    .env("POD_NAMESPACE", "istio-system")
                    .env("POD_NAME", "istiod-bench")
                    .args(options);
            }
        }
        let log = std::fs::File::create(dir.join(format!("{}.log", kind.name())))?;
        command
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let pid = child.id().context("the control plane exited at once")?;
        let mut plane = ControlPlane {
            kind,
            xds_address: xds,
            http_address: http,
            ca_dir,
            state_dir,
            child,
            pid,
        };
        plane.wait_ready(http, &dir).await?;
        Ok(plane)
    }

    async fn wait_ready(&mut self, http: SocketAddr, dir: &Path) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let url = format!("http://{http}/ready");
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited ({status}) before it was ready; its log: {}",
                    self.kind.name(),
                    dir.display()
                );
            }
            let answer = client.get(&url).send().await;
            if answer.is_ok_and(|a| a.status().is_success()) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} not ready after 120 s; its log is in {}",
                    self.kind.name(),
                    dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Memory and CPU so far, from /proc.
    pub fn usage(&self) -> anyhow::Result<Usage> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .context("reading the control plane's /proc status")?;
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0)
                * 1024
        };
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))?;
        // Fields after the command name (which may hold spaces) start at field 3.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .unwrap_or(100) as u64;
        let cpu_ticks = ticks(11) + ticks(12);
        Ok(Usage {
            rss_bytes: kib("VmRSS:"),
            peak_rss_bytes: kib("VmHWM:"),
            cpu: Duration::from_millis(cpu_ticks * 1000 / per_second),
        })
    }

    pub async fn stop(mut self) {
        if let Ok(pid) = i32::try_from(self.pid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}
