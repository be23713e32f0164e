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
