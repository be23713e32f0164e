//! `fleetmesh proxy-config cluster|listener|route|endpoint|secret POD[.NAMESPACE]`: what
//! meshd sends one proxy, as istioctl's command of that name shows it (a table, or the
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
    /// The certificates the proxy's config names: those meshd sends (a gateway's
    /// `credentialName`; private keys never shown) and those its agent serves.
    Secret,
}

impl Section {
    /// Its place among the config dump's `configs`, and the key of its entries there.
    fn dump(self) -> (usize, &'static str) {
        match self {
            Section::Cluster => (0, "dynamic_active_clusters"),
            Section::Listener => (1, "dynamic_listeners"),
            Section::Route => (2, "dynamic_route_configs"),
            Section::Endpoint => (3, "dynamic_endpoint_configs"),
            Section::Secret => (4, "dynamic_active_secrets"),
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
            Section::Secret => entry["secret"].clone(),
        })
        .collect()
}

/// The table istioctl prints for `section`, with `rows` beside those of `resources`.
fn render(section: Section, resources: &[Value], mut rows: Vec<Vec<String>>) -> String {
    let text = |v: &Value| v.as_str().unwrap_or("-").to_string();
    let header: &[&str] = match section {
        Section::Cluster => &["SERVICE FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE"],
        Section::Listener => &["NAME", "ADDRESS", "PORT"],
        Section::Route => &["NAME", "VIRTUAL HOSTS", "DOMAINS"],
        Section::Endpoint => &["ENDPOINT", "CLUSTER"],
        Section::Secret => &[
            "RESOURCE NAME",
            "SERVED BY",
            "TYPE",
            "SERIAL NUMBER",
            "NOT AFTER",
            "NOT BEFORE",
        ],
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
            Section::Secret => rows.push(secret_row(resource)),
        }
    }
    rows.sort();
    table(header, &rows)
}

/// A secret meshd sends: its certificate (the first of a chain) described, never its
/// key.
fn secret_row(secret: &Value) -> Vec<String> {
    let (kind, data) = if secret["tlsCertificate"].is_object() {
        ("Cert Chain", &secret["tlsCertificate"]["certificateChain"])
    } else {
        ("CA", &secret["validationContext"]["trustedCa"])
    };
    let pem = match (data["inlineBytes"].as_str(), data["inlineString"].as_str()) {
        (Some(encoded), _) => {
            use base64::Engine;
            let bytes = base64::engine::general_purpose::STANDARD.decode(encoded);
            String::from_utf8(bytes.unwrap_or_default()).unwrap_or_default()
        }
        (None, Some(text)) => text.to_string(),
        (None, None) => String::new(),
    };
    let time = |t: std::time::SystemTime| {
        k8s_openapi::jiff::Timestamp::try_from(t).map_or("-".into(), |t| t.to_string())
    };
    let first = fleetmesh_ca::inspect::certificates(&pem)
        .ok()
        .and_then(|found| found.into_iter().next());
    let mut row = vec![
        secret["name"].as_str().unwrap_or("-").to_string(),
        "meshd".into(),
        kind.into(),
    ];
    row.extend(match first {
        Some(c) => [c.serial, time(c.not_after), time(c.not_before)],
        None => ["-".into(), "-".into(), "-".into()],
    });
    row
}

/// The secrets the proxy's listeners and clusters name that its agent serves (the
/// workload certificate `default`, the mesh roots `ROOTCA`, files on the proxy's host):
/// meshd never holds them, so only their names and kinds are known here.
fn agent_secrets(dump: &Value) -> Vec<Vec<String>> {
    fn walk(value: &Value, names: &mut std::collections::BTreeSet<String>) {
        match value {
            Value::Object(fields) => {
                let config = &value["sdsConfig"];
                if let (Some(name), true) = (value["name"].as_str(), config.is_object())
                    && config.get("ads").is_none()
                {
                    names.insert(name.to_string());
                }
                fields.values().for_each(|field| walk(field, names));
            }
            Value::Array(items) => items.iter().for_each(|item| walk(item, names)),
            _ => {}
        }
    }
    let mut names = std::collections::BTreeSet::new();
    for section in [Section::Cluster, Section::Listener] {
        for resource in resources(dump, section) {
            walk(&resource, &mut names);
        }
    }
    names
        .into_iter()
        .map(|name| {
            let kind = if name == "ROOTCA" || name.starts_with("file-root:") {
                "CA"
            } else {
                "Cert Chain"
            };
            let mut row = vec![name, "agent".into(), kind.into()];
            row.extend(["-", "-", "-"].map(String::from));
            row
        })
        .collect()
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
    } else if section == Section::Secret {
        render(section, &resources, agent_secrets(&dump))
    } else {
        render(section, &resources, Vec::new())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_are_listed_with_who_serves_them() {
        let dir = tempfile::tempdir().unwrap();
        let day = std::time::Duration::from_secs(86_400);
        let ca =
            fleetmesh_ca::CertificateAuthority::load_or_create(dir.path(), "cluster.local", day)
                .unwrap();
        let chain = ca
            .issue_serving_certificate(&["shop.example.com".into()], day)
            .unwrap()
            .chain;
        let sds = |name: &str, source: Value| json!({"name": name, "sdsConfig": source});
        let agent = json!({"apiConfigSource": {"apiType": "GRPC"}});
        let ads = json!({"ads": {}});
        let dump = json!({"configs": [
            {"dynamic_active_clusters": [{"cluster": {"name": "outbound|443||a", "transportSocket":
                {"typedConfig": {"commonTlsContext": {"tlsCertificateSdsSecretConfigs": [sds("default", agent.clone())]}}}}}]},
            {"dynamic_listeners": [{"active_state": {"listener": {"name": "0.0.0.0_443", "filterChains": [
                {"transportSocket": {"typedConfig": {"commonTlsContext": {
                    "tlsCertificateSdsSecretConfigs": [sds("kubernetes://shop-cert", ads.clone())],
                    "combinedValidationContext": {"validationContextSdsSecretConfig": sds("ROOTCA", agent.clone())},
                }}}}]}}}]},
            {}, {},
            {"dynamic_active_secrets": [{"secret": {"name": "kubernetes://shop-cert", "tlsCertificate": {
                "certificateChain": {"inlineString": chain},
                "privateKey": {"inlineString": "[redacted]"},
            }}}]},
        ]});
        let table = render(
            Section::Secret,
            &resources(&dump, Section::Secret),
            agent_secrets(&dump),
        );
        let rows: Vec<Vec<&str>> = table
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(rows[0][..2], ["RESOURCE", "NAME"], "{table}");
        assert_eq!(rows[1], ["ROOTCA", "agent", "CA", "-", "-", "-"], "{table}");
        assert_eq!(
            rows[2],
            ["default", "agent", "Cert", "Chain", "-", "-", "-"],
            "{table}"
        );
        let shop = &rows[3];
        assert_eq!(
            shop[..5],
            ["kubernetes://shop-cert", "meshd", "Cert", "Chain", shop[4]]
        );
        assert!(
            shop[4].chars().all(|c| c.is_ascii_hexdigit()) && shop[5].ends_with('Z'),
            "a serial number and times: {table}"
        );
        assert_eq!(rows.len(), 4, "{table}");
    }

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
