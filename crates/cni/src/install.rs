//! `fleetmesh-cni install`: what the `istio-cni-node` DaemonSet runs on every node. It
//! copies the plugin and `fleetmesh-iptables` into the node's CNI binary directory,
//! writes the plugin a kubeconfig from the DaemonSet's service account, and chains the
//! plugin into the node's network configuration list; then it repeats that every minute
//! (the token rotates, and a network plugin may rewrite its configuration). Every write
//! is atomic: the runtime never reads half a file.

use anyhow::{Context, bail};
use serde_json::{Value, json};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub const PLUGIN_TYPE: &str = "fleetmesh-cni";
const KUBECONFIG_FILE: &str = "fleetmesh-cni.kubeconfig";
const BINARIES: [&str; 2] = ["fleetmesh-cni", "fleetmesh-iptables"];

/// Where things are, as the installer's container sees them and as the node does.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The image's binaries (`/usr/local/bin`).
    pub source_dir: PathBuf,
    /// The node's CNI binaries, mounted (`/host/opt/cni/bin`).
    pub bin_dir: PathBuf,
    /// The node's CNI configuration, mounted (`/host/etc/cni/net.d`).
    pub net_dir: PathBuf,
    /// The same directories as the node sees them (what the configuration names).
    pub host_bin_dir: PathBuf,
    pub host_net_dir: PathBuf,
}

/// One pass; returns the configuration list it chained into.
pub fn install_once(paths: &Paths, kubeconfig: &str) -> anyhow::Result<PathBuf> {
    for binary in BINARIES {
        let source = paths.source_dir.join(binary);
        let bytes =
            std::fs::read(&source).with_context(|| format!("reading {}", source.display()))?;
        write_atomic(&paths.bin_dir.join(binary), &bytes, 0o755)?;
    }
    write_atomic(
        &paths.net_dir.join(KUBECONFIG_FILE),
        kubeconfig.as_bytes(),
        0o600,
    )?;
    let conflist = network_config(&paths.net_dir)?;
    let text = std::fs::read_to_string(&conflist)
        .with_context(|| format!("reading {}", conflist.display()))?;
    let current: Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not JSON", conflist.display()))?;
    let plugin = json!({
        "type": PLUGIN_TYPE,
        "kubeconfig": paths.host_net_dir.join(KUBECONFIG_FILE),
        "iptables": paths.host_bin_dir.join("fleetmesh-iptables"),
    });
    if let Some(chained) = chain(&current, plugin)? {
        let text = serde_json::to_string_pretty(&chained)?;
        write_atomic(&conflist, text.as_bytes(), 0o644)?;
    }
    Ok(conflist)
}

/// The node's network configuration list: the first `*.conflist`, as the runtime picks.
fn network_config(dir: &Path) -> anyhow::Result<PathBuf> {
    let mut lists: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "conflist"))
        .collect();
    lists.sort();
    match lists.into_iter().next() {
        Some(list) => Ok(list),
        None => bail!(
            "no *.conflist in {} yet (the cluster's network plugin writes one; retrying)",
            dir.display()
        ),
    }
}

/// `list` with `plugin` last among its plugins (replacing an older entry of ours);
/// `None` when it is there already as it should be.
pub fn chain(list: &Value, plugin: Value) -> anyhow::Result<Option<Value>> {
    let Some(plugins) = list.get("plugins").and_then(Value::as_array) else {
        bail!("the network configuration list has no \"plugins\" array");
    };
    let ours = |p: &Value| p.get("type").and_then(Value::as_str) == Some(PLUGIN_TYPE);
    if plugins.last() == Some(&plugin) && plugins.iter().filter(|p| ours(p)).count() == 1 {
        return Ok(None);
    }
    let mut chained = list.clone();
    let mut kept: Vec<Value> = plugins.iter().filter(|p| !ours(p)).cloned().collect();
    kept.push(plugin);
    chained["plugins"] = Value::Array(kept);
    Ok(Some(chained))
}

/// A kubeconfig for the plugin from the pod's service account (in-cluster).
pub fn in_cluster_kubeconfig() -> anyhow::Result<String> {
    let dir = Path::new("/var/run/secrets/kubernetes.io/serviceaccount");
    let token = std::fs::read_to_string(dir.join("token")).context("the service account token")?;
    let ca = std::fs::read(dir.join("ca.crt")).context("the cluster CA")?;
    let host = std::env::var("KUBERNETES_SERVICE_HOST").context("KUBERNETES_SERVICE_HOST")?;
    let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    let ca = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(ca)
    };
    Ok(format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: https://{host}:{port}\n    certificate-authority-data: {ca}\nusers:\n- name: fleetmesh-cni\n  user:\n    token: {}\ncontexts:\n- name: local\n  context: {{cluster: local, user: fleetmesh-cni}}\ncurrent-context: local\n",
        token.trim()
    ))
}

fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let temporary = path.with_extension("fleetmesh-new");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&temporary)
        .with_context(|| format!("writing {}", temporary.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_once_and_keeps_the_network_plugin_first() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths {
            source_dir: dir.path().join("image"),
            bin_dir: dir.path().join("bin"),
            net_dir: dir.path().join("net.d"),
            host_bin_dir: "/opt/cni/bin".into(),
            host_net_dir: "/etc/cni/net.d".into(),
        };
        for d in [&paths.source_dir, &paths.bin_dir, &paths.net_dir] {
            std::fs::create_dir_all(d).unwrap();
        }
        for binary in BINARIES {
            std::fs::write(paths.source_dir.join(binary), binary).unwrap();
        }
        let error = install_once(&paths, "kubeconfig").unwrap_err().to_string();
        assert!(error.contains("no *.conflist"), "{error}");
        let list = paths.net_dir.join("10-kindnet.conflist");
        std::fs::write(
            &list,
            r#"{"cniVersion": "1.0.0", "name": "kindnet", "plugins": [{"type": "ptp"}, {"type": "portmap"}]}"#,
        )
        .unwrap();
        install_once(&paths, "kubeconfig").unwrap();
        let first = std::fs::read_to_string(&list).unwrap();
        install_once(&paths, "kubeconfig").unwrap();
        assert_eq!(
            std::fs::read_to_string(&list).unwrap(),
            first,
            "a second pass changes nothing"
        );
        let chained: Value = serde_json::from_str(&first).unwrap();
        let types: Vec<&str> = chained["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["ptp", "portmap", "fleetmesh-cni"]);
        assert_eq!(
            chained["plugins"][2]["kubeconfig"],
            "/etc/cni/net.d/fleetmesh-cni.kubeconfig"
        );
        assert_eq!(
            std::fs::read_to_string(paths.bin_dir.join("fleetmesh-iptables")).unwrap(),
            "fleetmesh-iptables"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(paths.net_dir.join(KUBECONFIG_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the token is the node's secret");
    }

    #[test]
    fn a_list_without_plugins_is_refused() {
        assert!(chain(&json!({"name": "x"}), json!({"type": PLUGIN_TYPE})).is_err());
    }
}
