//! `fleetmesh x create-remote-secret`: what `istioctl x create-remote-secret` writes. In
//! the cluster of `--context` it creates a read-only service account (`fleetmesh-reader`:
//! list and watch Services, EndpointSlices, Pods, and read the install ConfigMap that names
//! the cluster's location) with a token; it prints Secret `istio-remote-secret-NAME` for
//! istio-system, labelled `istio/multiCluster: "true"`, whose data key NAME holds a
//! kubeconfig with that token. Applied to another cluster, meshd gives that cluster's
//! proxies this cluster's endpoints.
//!
//! The token is the service account's token Secret (as istioctl's): it does not expire;
//! deleting Secret `istio-system/fleetmesh-reader-token` revokes it, and running the
//! command again mints a new one (apply the new remote secret: meshd switches live).

use anyhow::{Context, bail};
use base64::Engine;
use fleetmesh_kube::apply::{Applier, documents};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::config::Kubeconfig;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const NAMESPACE: &str = "istio-system";
const TOKEN_SECRET: &str = "fleetmesh-reader-token";
/// How long the cluster's token controller may take to fill the token in.
const TOKEN_WAIT: Duration = Duration::from_secs(30);
const SECRET_PREFIX: &str = "istio-remote-secret-";

/// What to make a remote secret of.
pub struct RemoteSecretOptions {
    /// The kubeconfig (default: `$KUBECONFIG` or `~/.kube/config`).
    pub kubeconfig: Option<PathBuf>,
    /// Its context for the cluster to read (default: the current one).
    pub context: Option<String>,
    /// The cluster's name in the mesh (its endpoints' cluster id).
    pub name: String,
    /// The API server address meshd should use, if not the kubeconfig's.
    pub server: Option<String>,
}

/// Sets up the reader in the cluster and returns the remote secret's YAML.
pub async fn create(options: &RemoteSecretOptions) -> anyhow::Result<String> {
    check_name(&options.name)?;
    let loaded = crate::install::read_kubeconfig(options.kubeconfig.as_deref())?;
    let (server, ca_data) = cluster_of(
        &loaded,
        options.context.as_deref(),
        options.kubeconfig.as_deref(),
    )?;
    let server = options.server.clone().unwrap_or(server);
    let client =
        crate::install::connect(options.kubeconfig.as_deref(), options.context.as_deref()).await?;
    let applier = Applier::new(client.clone(), "fleetmesh-remote-secret").await?;
    for object in documents(READER_MANIFESTS)? {
        applier.apply(&object, None).await.with_context(|| {
            format!(
                "creating {} in the cluster to read",
                fleetmesh_kube::apply::describe(&object)
            )
        })?;
    }
    let token = wait_for_token(&Api::namespaced(client, NAMESPACE)).await?;
    Ok(render(&options.name, &server, &ca_data, &token))
}

/// A cluster name must serve as a Secret name's suffix and a data key.
fn check_name(name: &str) -> anyhow::Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 253 - SECRET_PREFIX.len()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !name.starts_with(['-', '.'])
        && !name.ends_with(['-', '.']);
    if !valid {
        bail!(
            "--name {name:?}: a cluster name is lowercase letters, digits, '-' and '.' (as a Kubernetes name), starting and ending with a letter or digit"
        );
    }
    Ok(())
}

/// The API server and CA (base64 PEM) of `context` (default: the current one).
fn cluster_of(
    kubeconfig: &Kubeconfig,
    context: Option<&str>,
    path: Option<&Path>,
) -> anyhow::Result<(String, String)> {
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

/// The token of the reader's token Secret, once the cluster has filled it in.
async fn wait_for_token(secrets: &Api<Secret>) -> anyhow::Result<String> {
    let deadline = Instant::now() + TOKEN_WAIT;
    loop {
        let secret = secrets.get_opt(TOKEN_SECRET).await?;
        let token = secret
            .and_then(|s| s.data)
            .and_then(|mut d| d.remove("token"))
            .and_then(|t| String::from_utf8(t.0).ok())
            .filter(|t| !t.is_empty());
        if let Some(token) = token {
            return Ok(token);
        }
        if Instant::now() > deadline {
            bail!(
                "the cluster gave {NAMESPACE}/{TOKEN_SECRET} no token within {TOKEN_WAIT:?} (does kube-controller-manager run its token controller?)"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The remote secret: what istioctl prints, with this cluster's reader token.
fn render(name: &str, server: &str, ca_data: &str, token: &str) -> String {
    let kubeconfig = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": server, "certificate-authority-data": ca_data}}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
    });
    let secret = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": format!("{SECRET_PREFIX}{name}"),
            "namespace": NAMESPACE,
            "labels": {fleetmesh_kube::remote::MULTICLUSTER_LABEL: "true"},
            "annotations": {"networking.istio.io/cluster": name},
        },
        "type": "Opaque",
        "stringData": {name: serde_yaml_ng::to_string(&kubeconfig).unwrap_or_default()},
    });
    format!(
        "# This file is autogenerated, do not edit.\n{}",
        serde_yaml_ng::to_string(&secret).unwrap_or_default()
    )
}

/// The reader: a service account that may list and watch what meshd reads of a remote
/// cluster, and nothing else (no Secrets, no writes).
const READER_MANIFESTS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: istio-system}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: fleetmesh-reader, namespace: istio-system}
---
apiVersion: v1
kind: Secret
type: kubernetes.io/service-account-token
metadata:
  name: fleetmesh-reader-token
  namespace: istio-system
  annotations: {kubernetes.io/service-account.name: fleetmesh-reader}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: fleetmesh-reader}
rules:
- apiGroups: [""]
  resources: [services, pods]
  verbs: [get, list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: fleetmesh-reader}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: fleetmesh-reader}
subjects: [{kind: ServiceAccount, name: fleetmesh-reader, namespace: istio-system}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: fleetmesh-reader, namespace: istio-system}
rules:
- apiGroups: [""]
  resources: [configmaps]
  resourceNames: [fleetmesh-install]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: fleetmesh-reader, namespace: istio-system}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: fleetmesh-reader}
subjects: [{kind: ServiceAccount, name: fleetmesh-reader, namespace: istio-system}]
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_cannot_name_a_secret_are_refused() {
        for bad in ["", "Cluster", "a_b", "-a", "a.", &"x".repeat(300)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        check_name("cluster-2.eu").unwrap();
    }

    #[test]
    fn the_secret_is_istioctls_shape() {
        let yaml = render("c2", "https://127.0.0.1:6443", "Q0E=", "tok");
        let secret: serde_yaml_ng::Value = serde_yaml_ng::from_str(&yaml).unwrap();
        assert_eq!(secret["metadata"]["name"], "istio-remote-secret-c2");
        assert_eq!(secret["metadata"]["labels"]["istio/multiCluster"], "true");
        assert_eq!(
            secret["metadata"]["annotations"]["networking.istio.io/cluster"],
            "c2"
        );
        let kubeconfig = secret["stringData"]["c2"].as_str().unwrap();
        let parsed = Kubeconfig::from_yaml(kubeconfig).unwrap();
        assert_eq!(parsed.current_context.as_deref(), Some("c2"));
        assert_eq!(
            parsed.clusters[0]
                .cluster
                .as_ref()
                .unwrap()
                .server
                .as_deref(),
            Some("https://127.0.0.1:6443")
        );
    }
}
