//! The status page (`/status`, on the debug listener): what an operator looks at first.
//! The page is static; its script asks `/debug/status` every two seconds and redraws:
//! the meshes and their clusters, the revisions and the proxy versions they run, each
//! revision's managed rollout (its DataPlaneControl's status), the proxies not in sync or
//! rejecting config, and config errors.
//!
//! Everything shown may be tenant-written (file names, errors quoting a value, node ids):
//! the script only ever sets text, never markup, and the page's Content-Security-Policy
//! runs no script but its own.

use fleetmesh_server::ProxyStatus;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The page.
pub const PAGE: &str = include_str!("status_page/status.html");
/// Its script.
pub const SCRIPT: &str = include_str!("status_page/status.js");
/// Scripts from this origin only (no inline script), no plugin, no framing; the page's
/// own inline style.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; object-src 'none'; frame-ancestors 'none'";

/// How many proxies each list names at most (a mesh has thousands; the counts are whole).
const LISTED: usize = 50;

/// What the page shows: `projects` as `/v1/projects` lists them, `rollouts` (each
/// cluster's DataPlaneControl status by revision), the connected proxies, and the config
/// errors of the moment.
pub fn summary(
    projects: Value,
    rollouts: Value,
    proxies: &[ProxyStatus],
    config_errors: Vec<String>,
) -> Value {
    let mut revisions: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    let mut clusters: BTreeMap<&str, usize> = BTreeMap::new();
    let mut out_of_sync = Vec::new();
    let mut rejecting = Vec::new();
    for proxy in proxies {
        let revision = proxy.revision.clone().unwrap_or_else(|| "none".into());
        *revisions
            .entry(revision.clone())
            .or_default()
            .entry(proxy.proxy_version.clone())
            .or_default() += 1;
        *clusters.entry(proxy.cluster_id.as_str()).or_default() += 1;
        let waiting: Vec<&str> = proxy
            .types
            .iter()
            .filter(|(_, t)| !t.acked())
            .map(|(kind, _)| kind.short_name())
            .collect();
        if !waiting.is_empty() {
            out_of_sync.push(json!({
                "proxy": proxy.proxy_id,
                "revision": revision,
                "waiting": waiting,
            }));
        }
        for (kind, t) in &proxy.types {
            if let Some(message) = &t.last_nack {
                rejecting.push(json!({
                    "proxy": proxy.proxy_id,
                    "type": kind.short_name(),
                    "message": message,
                }));
            }
        }
    }
    let listed = |all: Vec<Value>| json!({"count": all.len(), "first": all.into_iter().take(LISTED).collect::<Vec<_>>()});
    json!({
        "projects": projects,
        "rollouts": rollouts,
        "clusters": clusters,
        "revisions": revisions,
        "proxies": proxies.len(),
        "outOfSync": listed(out_of_sync),
        "rejecting": listed(rejecting),
        "configErrors": config_errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetmesh_server::registry::TypeStatus;
    use fleetmesh_xds::ResourceType;

    fn proxy(
        id: &str,
        revision: &str,
        version: &str,
        types: &[(ResourceType, TypeStatus)],
    ) -> ProxyStatus {
        ProxyStatus {
            proxy_id: id.into(),
            proxy_version: version.into(),
            proxy_type: "sidecar",
            cluster_id: "east".into(),
            revision: Some(revision.into()),
            connected_at: std::time::SystemTime::now(),
            protocol: "delta",
            types: types.iter().cloned().collect(),
            resources: Default::default(),
        }
    }

    fn status(sent: &str, acked: &str, nack: Option<&str>) -> TypeStatus {
        TypeStatus {
            sent_version: sent.into(),
            acked_version: acked.into(),
            last_nack: nack.map(String::from),
        }
    }

    #[test]
    fn counts_versions_per_revision_and_names_proxies_behind() {
        let synced = [(ResourceType::Cluster, status("a", "a", None))];
        let behind = [
            (ResourceType::Cluster, status("b", "a", None)),
            (
                ResourceType::Listener,
                status("c", "c", Some("bad listener")),
            ),
        ];
        let proxies = [
            proxy("one", "asm-managed", "1.0", &synced),
            proxy("two", "asm-managed", "1.1", &behind),
            proxy("three", "asm-managed-rapid", "1.1", &synced),
        ];
        let rollouts = json!({"east": {"asm-managed": {"state": "Ready"}}});
        let summary = summary(json!({}), rollouts, &proxies, vec!["f.yaml: bad".into()]);
        assert_eq!(summary["rollouts"]["east"]["asm-managed"]["state"], "Ready");
        assert_eq!(
            summary["revisions"],
            json!({"asm-managed": {"1.0": 1, "1.1": 1}, "asm-managed-rapid": {"1.1": 1}})
        );
        assert_eq!(summary["clusters"], json!({"east": 3}));
        assert_eq!(summary["proxies"], 3);
        assert_eq!(
            summary["outOfSync"],
            json!({"count": 1, "first": [{"proxy": "two", "revision": "asm-managed", "waiting": ["cds"]}]})
        );
        assert_eq!(
            summary["rejecting"]["first"],
            json!([{"proxy": "two", "type": "lds", "message": "bad listener"}])
        );
        assert_eq!(summary["configErrors"], json!(["f.yaml: bad"]));
    }
}
