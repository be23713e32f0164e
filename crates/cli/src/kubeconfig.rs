//! Kubeconfigs as the CLI uses them: the user's (to reach a cluster), and the ones it
//! writes for meshd (a service account's token for one cluster, nothing else).

use anyhow::{Context, bail};
use base64::Engine;
use std::path::{Path, PathBuf};

/// The kubeconfig at `path`, or the environment's (`$KUBECONFIG`, `~/.kube/config`).
pub fn read(path: Option<&Path>) -> anyhow::Result<kube::config::Kubeconfig> {
    match path {
        Some(path) => kube::config::Kubeconfig::read_from(path)
            .with_context(|| format!("reading kubeconfig {}", path.display())),
        None => kube::config::Kubeconfig::read()
            .context("no kubeconfig (set KUBECONFIG, or pass --kubeconfig)"),
    }
}

/// A client of `context` (default: the current one) of the kubeconfig at `kubeconfig`
/// (default: the environment's).
pub async fn connect(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
) -> anyhow::Result<kube::Client> {
    let loaded = read(kubeconfig)?;
    let options = kube::config::KubeConfigOptions {
        context: context.map(str::to_string),
        ..Default::default()
    };
    let config = kube::Config::from_custom_kubeconfig(loaded, &options)
        .await
        .with_context(|| match context {
            Some(context) => format!("kubeconfig context {context:?}"),
            None => "the kubeconfig's current context".to_string(),
        })?;
    Ok(kube::Client::try_from(config)?)
}

/// The API server and CA (base64 PEM) of `context` (default: the current one) of the
/// kubeconfig at `path` (default: the environment's).
pub fn cluster_of(path: Option<&Path>, context: Option<&str>) -> anyhow::Result<(String, String)> {
    let kubeconfig = &read(path)?;
    let context_name = context
        .or(kubeconfig.current_context.as_deref())
        .context("the kubeconfig has no current context: pass --context")?;
    let cluster_name = kubeconfig
        .contexts
        .iter()
        .find(|c| c.name == context_name)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone())
        .with_context(|| format!("the kubeconfig has no context {context_name:?}"))?;
    let cluster = kubeconfig
        .clusters
        .iter()
        .find(|c| c.name == cluster_name)
        .and_then(|c| c.cluster.as_ref())
        .with_context(|| format!("the kubeconfig has no cluster {cluster_name:?}"))?;
    let server = cluster
        .server
        .clone()
        .with_context(|| format!("cluster {cluster_name:?} has no server"))?;
    let ca_data = match (
        &cluster.certificate_authority_data,
        &cluster.certificate_authority,
    ) {
        (Some(data), _) => data.clone(),
        (None, Some(file)) => {
            // Relative to the kubeconfig, as kubectl reads it.
            let file = path
                .and_then(Path::parent)
                .map_or_else(|| PathBuf::from(file), |d| d.join(file));
            let pem = std::fs::read(&file)
                .with_context(|| format!("certificate-authority {}", file.display()))?;
            base64::engine::general_purpose::STANDARD.encode(pem)
        }
        (None, None) => bail!(
            "cluster {cluster_name:?} has no certificate-authority: meshd verifies the API server, so the remote secret needs its CA"
        ),
    };
    Ok((server, ca_data))
}

/// A kubeconfig for cluster `name` at `server` (its CA, base64 PEM) with `token`.
pub fn with_token(name: &str, server: &str, ca_data: &str, token: &str) -> String {
    let kubeconfig = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": server, "certificate-authority-data": ca_data}}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
    });
    serde_yaml_ng::to_string(&kubeconfig).unwrap_or_default()
}
