//! `fleetmesh proxy-config cluster|listener|route|endpoint POD[.NAMESPACE]`: what meshd
//! sends one proxy, as istioctl's command of that name shows it (a table, or the
//! resources themselves with `-o json`), read from meshd's `/debug/config_dump`. The
//! proxy is found among the connected ones by its pod name and namespace.

use crate::install::meshd_api::MeshdApi;
use serde_json::Value;

/// What to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Section {
    /// CDS clusters.
    Cluster,
    /// LDS listeners.
    Listener,
    /// RDS route configurations.
    Route,
    /// EDS endpoints.
    Endpoint,
}

impl Section {
    /// Its place among the config dump's `configs`, and the key of its entries there.
    fn dump(self) -> (usize, &'static str) {
        match self {
            Section::Cluster => (0, "dynamic_active_clusters"),
            Section::Listener => (1, "dynamic_listeners"),
            Section::Route => (2, "dynamic_route_configs"),
            Section::Endpoint => (3, "dynamic_endpoint_configs"),
        }
    }
}

/// The node id of the connected proxy of pod `pod` (`NAME` or `NAME.NAMESPACE`, default
/// namespace `default`), as `/debug/syncz` lists it.
pub fn find_proxy(syncz: &Value, pod: &str) -> anyhow::Result<String> {
    let wanted = if pod.contains('.') {
        pod.to_string()
    } else {
        format!("{pod}.default")
    };
    let ids: Vec<&str> = syncz
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["proxy"].as_str())
        .collect();
    // Istio's node ids: TYPE~IP~POD.NAMESPACE~NAMESPACE.svc.DOMAIN.
    ids.iter()
        .find(|id| id.split('~').nth(2) == Some(wanted.as_str()))
        .map(|id| id.to_string())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no proxy of pod {wanted} is connected to meshd ({} are; `fleetmesh proxy-status` lists them)",
                ids.len()
            )
        })
}

/// The resources of `section` in a config dump (Envoy's resources in proto JSON:
/// lowerCamelCase fields).
pub fn resources(dump: &Value, section: Section) -> Vec<Value> {
    let (index, key) = section.dump();
    let entries = dump["configs"][index][key].as_array().cloned();
    entries
        .unwrap_or_default()
        .into_iter()
        .map(|entry| match section {
            Section::Cluster => entry["cluster"].clone(),
            Section::Listener => entry["active_state"]["listener"].clone(),
            Section::Route => entry["route_config"].clone(),
            Section::Endpoint => entry["endpoint_config"].clone(),
        })
        .collect()
}

/// The table istioctl prints for `section`.
pub fn render(section: Section, resources: &[Value]) -> String {
    let text = |v: &Value| v.as_str().unwrap_or("-").to_string();
    let mut rows: Vec<Vec<String>> = Vec::new();
    let header: &[&str] = match section {
        Section::Cluster => &["SERVICE FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE"],
        Section::Listener => &["NAME", "ADDRESS", "PORT"],
        Section::Route => &["NAME", "VIRTUAL HOSTS", "DOMAINS"],
        Section::Endpoint => &["ENDPOINT", "CLUSTER"],
    };
    for resource in resources {
        match section {
            Section::Cluster => {
                let name = text(&resource["name"]);
                let kind = resource["type"].as_str().unwrap_or("EDS").to_string();
                // Istio's names: DIRECTION|PORT|SUBSET|FQDN; others as they are.
                match name.split('|').collect::<Vec<_>>()[..] {
                    [direction, port, subset, fqdn] => rows.push(vec![
                        fqdn.into(),
                        port.into(),
                        subset.into(),
                        direction.into(),
                        kind,
                    ]),
                    _ => rows.push(vec![name, "-".into(), "-".into(), "-".into(), kind]),
                }
            }
            Section::Listener => {
                let address = &resource["address"]["socketAddress"];
                let port = address["portValue"]
                    .as_u64()
                    .map_or("-".into(), |p| p.to_string());
                rows.push(vec![
                    text(&resource["name"]),
                    text(&address["address"]),
                    port,
                ]);
            }
            Section::Route => {
                let hosts = resource["virtualHosts"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                let domains: Vec<String> = hosts
                    .iter()
                    .flat_map(|h| h["domains"].as_array().cloned().unwrap_or_default())
                    .filter_map(|d| d.as_str().map(str::to_string))
                    .collect();
                rows.push(vec![
                    text(&resource["name"]),
                    hosts.len().to_string(),
                    domains.join(","),
                ]);
            }
            Section::Endpoint => {
                let cluster = text(&resource["clusterName"]);
                let groups = resource["endpoints"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                for endpoint in groups
                    .iter()
                    .flat_map(|g| g["lbEndpoints"].as_array().cloned().unwrap_or_default())
                {
                    let address = &endpoint["endpoint"]["address"]["socketAddress"];
                    let port = address["portValue"].as_u64().unwrap_or_default();
                    let at = format!("{}:{port}", text(&address["address"]));
                    rows.push(vec![at, cluster.clone()]);
                }
            }
        }
    }
    rows.sort();
    table(header, &rows)
}

/// Columns padded to their widest cell.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        padded.join("  ").trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// The proxy of `pod`'s `section`: a table, or with `json` the resources themselves.
pub async fn show(
    meshd: &MeshdApi,
    section: Section,
    pod: &str,
    json: bool,
) -> anyhow::Result<String> {
    let proxy = find_proxy(&meshd.syncz().await?, pod)?;
    let dump = meshd.config_dump(&proxy).await?;
    let resources = resources(&dump, section);
    Ok(if json {
        serde_json::to_string_pretty(&resources)? + "\n"
    } else {
        render(section, &resources)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_pod_is_found_by_name_and_namespace() {
        let syncz = json!([
            {"proxy": "sidecar~10.0.0.1~web-1.shop~shop.svc.cluster.local"},
            {"proxy": "sidecar~10.0.0.2~web-1.default~default.svc.cluster.local"},
        ]);
        assert_eq!(
            find_proxy(&syncz, "web-1.shop").unwrap(),
            "sidecar~10.0.0.1~web-1.shop~shop.svc.cluster.local"
        );
        assert!(
            find_proxy(&syncz, "web-1")
                .unwrap()
                .contains("web-1.default")
        );
        let missing = find_proxy(&syncz, "web-2.shop").unwrap_err().to_string();
        assert!(
            missing.contains("web-2.shop") && missing.contains("2 are"),
            "{missing}"
        );
    }
}
