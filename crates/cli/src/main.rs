//! `fleetmesh`: the command users type.

use clap::{Parser, Subcommand};
use fleetmesh_agent::XdsMode;
use fleetmesh_cli::demo::{self, DemoOptions};
use fleetmesh_cli::sample_app::SampleApp;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "fleetmesh",
    version,
    about = "fleetmesh: a managed service mesh for Istio's API and real Envoy proxies"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a mesh on this machine: meshd, sample services with Envoy sidecars on loopback
    /// addresses, and traffic split 80/20 by a VirtualService you can edit live.
    Demo {
        /// Where the demo's YAML goes (edit it while the demo runs).
        #[arg(long, default_value = "fleetmesh-demo")]
        config_dir: PathBuf,
        /// Requests to send for the first split.
        #[arg(long, default_value = "200")]
        requests: usize,
        /// Print the split and stop, instead of running until Ctrl-C.
        #[arg(long)]
        exit: bool,
        /// xDS protocol the sidecars use: `sotw` or `delta`.
        #[arg(long, default_value = "delta", value_parser = ["sotw", "delta"])]
        xds_mode: String,
    },
    /// Issue a token that proves a workload's identity to meshd (for `fleetmesh-agent
    /// --token-file`). Reads the token key in meshd's CA directory; keep the token secret.
    Token {
        /// meshd's `--ca-dir`.
        #[arg(long, env = "MESHD_CA_DIR", default_value = "./var/lib/fleetmesh/ca")]
        ca_dir: PathBuf,
        #[arg(long)]
        namespace: String,
        #[arg(long)]
        service_account: String,
    },
    /// Rotate the mesh root in three steps, each picked up live by meshd: `add` (trust a
    /// new root beside the old), then after half a certificate lifetime `activate` (sign
    /// with it), then after a full lifetime `retire` (trust only the new root).
    RotateRoot {
        #[arg(value_parser = ["add", "activate", "retire"])]
        step: String,
        /// meshd's `--ca-dir`.
        #[arg(long, env = "MESHD_CA_DIR", default_value = "./var/lib/fleetmesh/ca")]
        ca_dir: PathBuf,
        #[arg(long, env = "MESHD_TRUST_DOMAIN", default_value = "cluster.local")]
        trust_domain: String,
    },
    /// The sample HTTP app the demo runs: answers with its service, version and headers.
    SampleApp {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        #[arg(long)]
        service: String,
        #[arg(long, default_value = "v1")]
        version: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt().with_env_filter(filter).init();
    match Cli::parse().command {
        Command::Demo {
            config_dir,
            requests,
            exit,
            xds_mode,
        } => {
            let xds_mode = if xds_mode == "sotw" {
                XdsMode::Sotw
            } else {
                XdsMode::Delta
            };
            demo::run(DemoOptions {
                config_dir,
                requests,
                exit,
                xds_mode,
            })
            .await
        }
        Command::Token {
            ca_dir,
            namespace,
            service_account,
        } => {
            let issuer = fleetmesh_ca::TokenIssuer::load_or_create(&ca_dir)
                .map_err(|e| anyhow::anyhow!("token key in {}: {e}", ca_dir.display()))?;
            println!(
                "{}",
                issuer.issue(&fleetmesh_ca::Identity::new(&namespace, &service_account))
            );
            Ok(())
        }
        Command::RotateRoot {
            step,
            ca_dir,
            trust_domain,
        } => {
            use fleetmesh_ca::rotation;
            match step.as_str() {
                "add" => rotation::add_root(&ca_dir, &trust_domain)?,
                "activate" => rotation::activate_root(&ca_dir)?,
                _ => rotation::retire_roots(&ca_dir)?,
            }
            println!("root rotation step `{step}` done in {}", ca_dir.display());
            Ok(())
        }
        Command::SampleApp {
            listen,
            service,
            version,
        } => {
            let app = SampleApp::start(listen, &service, &version).await?;
            println!("{service} {version} listening on {}", app.address());
            tokio::signal::ctrl_c().await?;
            Ok(())
        }
    }
}
