//! `fleetmesh proxy-status`: every proxy connected to meshd, with its proxy version and
//! the revision that injected it, and whether it has ACKed what meshd sent, so users
//! without the managed data plane know which pods still run an old proxy (S12).

use crate::install::meshd_api::MeshdApi;
use serde_json::Value;

/// One connected proxy.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub proxy: String,
    pub version: String,
    pub revision: String,
    /// `SYNCED` when every type it subscribed to is ACKed at the version sent.
    pub sync: String,
}

pub async fn fetch(meshd: &MeshdApi) -> anyhow::Result<Vec<Row>> {
    let proxies = meshd.syncz().await?;
    Ok(proxies
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let text = |key: &str| p[key].as_str().unwrap_or("-").to_string();
            let synced = ["cluster", "listener", "route", "endpoint"]
                .iter()
                .all(|t| {
                    p[format!("{t}_sent")] == p[format!("{t}_acked")]
                        && p[format!("{t}_nack")] == Value::Null
                });
            Row {
                proxy: text("proxy"),
                version: text("proxy_version"),
                revision: text("revision"),
                sync: if synced { "SYNCED" } else { "NOT SYNCED" }.into(),
            }
        })
        .collect())
}

pub fn render(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<64} {:<12} {:<20} {}\n",
        "NAME", "VERSION", "REVISION", "SYNC"
    );
    for row in rows {
        out.push_str(&format!(
            "{:<64} {:<12} {:<20} {}\n",
            row.proxy, row.version, row.revision, row.sync
        ));
    }
    out
}
