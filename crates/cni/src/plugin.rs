//! The CNI plugin, chained after the cluster's own network plugin (CNI spec 1.0): on
//! ADD it looks the pod up in the API server and, when its injected `istio-proxy`
//! captures traffic (the sidecar template, not a gateway), runs `fleetmesh-iptables` in
//! the pod's network namespace. It passes the previous plugin's result on unchanged.
//! Pods without a proxy are left alone.

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Pod;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const SUPPORTED_VERSIONS: [&str; 4] = ["0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The plugin's entry in the network configuration list.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    #[serde(default = "default_version")]
    pub cni_version: String,
    /// How the plugin reaches the API server (written by the installer).
    pub kubeconfig: PathBuf,
    /// `fleetmesh-iptables`; default: beside this binary.
    #[serde(default)]
    pub iptables: Option<PathBuf>,
    /// The previous plugin's result, passed on.
    #[serde(default)]
    pub prev_result: Option<Value>,
}

fn default_version() -> String {
    "1.0.0".into()
}

/// What the runtime says about the call (`CNI_*` environment variables).
#[derive(Debug, Clone)]
pub struct Call {
    pub command: String,
    pub netns: Option<String>,
    /// `K8S_POD_NAMESPACE`, `K8S_POD_NAME`, ... from `CNI_ARGS`.
    pub args: BTreeMap<String, String>,
}

impl Call {
    pub fn from_env() -> Call {
        Call {
            command: std::env::var("CNI_COMMAND").unwrap_or_default(),
            netns: std::env::var("CNI_NETNS").ok().filter(|n| !n.is_empty()),
            args: parse_args(&std::env::var("CNI_ARGS").unwrap_or_default()),
        }
    }
}

/// `IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0` → a map.
pub fn parse_args(text: &str) -> BTreeMap<String, String> {
    text.split(';')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Runs one call; returns what to print on stdout.
pub async fn run(call: &Call, stdin: &str) -> anyhow::Result<Option<Value>> {
    match call.command.as_str() {
        "VERSION" => Ok(Some(json!({
            "cniVersion": "1.0.0",
            "supportedVersions": SUPPORTED_VERSIONS,
        }))),
        "ADD" => {
            let conf: NetConf = serde_json::from_str(stdin).context("the network configuration")?;
            add(call, &conf).await?;
            // Chained: the previous result goes on as it came.
            let mut result = conf.prev_result.unwrap_or_else(|| json!({}));
            result["cniVersion"] = conf.cni_version.into();
            Ok(Some(result))
        }
        // The rules live in the pod's namespace and go with it.
        "DEL" | "CHECK" | "GC" | "STATUS" => Ok(None),
        other => bail!("unknown CNI_COMMAND {other:?}"),
    }
}

async fn add(call: &Call, conf: &NetConf) -> anyhow::Result<()> {
    let (Some(namespace), Some(name)) = (
        call.args.get("K8S_POD_NAMESPACE"),
        call.args.get("K8S_POD_NAME"),
    ) else {
        // Not a Kubernetes pod: nothing of ours.
        return Ok(());
    };
    let netns = call.netns.as_deref().context("CNI_NETNS is not set")?;
    let loaded = kube::config::Kubeconfig::read_from(&conf.kubeconfig)
        .with_context(|| format!("kubeconfig {}", conf.kubeconfig.display()))?;
    let config =
        kube::Config::from_custom_kubeconfig(loaded, &kube::config::KubeConfigOptions::default())
            .await?;
    let pods: kube::Api<Pod> = kube::Api::namespaced(kube::Client::try_from(config)?, namespace);
    let pod = pods
        .get(name)
        .await
        .with_context(|| format!("reading pod {namespace}/{name}"))?;
    if !fleetmesh_inject::template::captures_traffic(&pod) {
        return Ok(());
    }
    let iptables = match &conf.iptables {
        Some(path) => path.clone(),
        None => beside_this_binary("fleetmesh-iptables")?,
    };
    redirect(netns, &iptables)
}

/// Runs `fleetmesh-iptables` inside the network namespace `netns`.
pub fn redirect(netns: &str, iptables: &Path) -> anyhow::Result<()> {
    let output = std::process::Command::new("nsenter")
        .arg(format!("--net={netns}"))
        .arg(iptables)
        .args(fleetmesh_inject::template::redirect_args())
        .output()
        .context("running nsenter (util-linux)")?;
    if !output.status.success() {
        bail!(
            "{} in {netns} failed: {}",
            iptables.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

fn beside_this_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(exe.with_file_name(name))
}

/// A CNI error result, as the spec wants it on stdout.
pub fn error_result(error: &anyhow::Error) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "code": 999,
        "msg": "fleetmesh-cni failed",
        "details": format!("{error:#}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cni_args() {
        let args = parse_args(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc",
        );
        assert_eq!(args["K8S_POD_NAMESPACE"], "shop");
        assert_eq!(args["K8S_POD_NAME"], "web-0");
        assert!(parse_args("").is_empty());
    }

    #[tokio::test]
    async fn version_and_unknown_commands() {
        let call = |command: &str| Call {
            command: command.into(),
            netns: None,
            args: BTreeMap::new(),
        };
        let version = run(&call("VERSION"), "").await.unwrap().unwrap();
        assert!(version["supportedVersions"].as_array().unwrap().len() >= 3);
        assert_eq!(run(&call("DEL"), "").await.unwrap(), None);
        assert!(run(&call("BOGUS"), "").await.is_err());
        // ADD of something that is not a pod: the previous result, passed on.
        let conf = r#"{"cniVersion": "1.0.0", "kubeconfig": "/nonexistent", "prevResult": {"ips": [{"address": "198.18.0.7/22"}]}}"#;
        let result = run(&call("ADD"), conf).await.unwrap().unwrap();
        assert_eq!(result["ips"][0]["address"], "198.18.0.7/22");
        assert_eq!(result["cniVersion"], "1.0.0");
    }
}
