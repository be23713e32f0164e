use clap::Parser;
use fleetmesh_meshd::{Meshd, MeshdConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = MeshdConfig::parse();
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    if config.log_format == "json" {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    tracing::debug!(config = %serde_json::to_string(&config)?, "settings");
    let meshd = Meshd::start(config).await?;
    wait_for_signal().await?;
    tracing::info!("shutting down");
    meshd.shutdown().await;
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}
