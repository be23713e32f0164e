//! `fleetmesh kube-inject -f FILE`: the injection webhook's templates applied offline to
//! a manifest (istioctl's manual injection). Pods and the pod templates of workload
//! kinds get their proxy; everything else passes through unchanged. Pods injected this
//! way are marked so, and the managed data plane leaves them alone (evicting them would
//! bring back the same hand-injected proxy).

use anyhow::Context;
use fleetmesh_inject::policy::{self, Decision};
use fleetmesh_inject::template::{self, Settings};
use k8s_openapi::api::core::v1::Pod;
use serde::Deserialize;
use serde_json::Value;

/// What `fleetmesh install` recorded in the cluster (ConfigMap
/// `istio-system/fleetmesh-install`), so hand-injected pods reach meshd, redirect traffic
/// and pull images as webhook-injected ones do. A field install did not record is `None`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Recorded {
    pub xds_address: Option<String>,
    pub cluster: Option<String>,
    pub cni_managed: Option<bool>,
    pub hub: Option<String>,
}

impl Recorded {
    /// Reads the install's record; a cluster without one is an error that says so.
    pub async fn read(client: &kube::Client) -> anyhow::Result<Recorded> {
        let config_maps: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
            kube::Api::namespaced(client.clone(), crate::install::manifests::ISTIO_SYSTEM);
        let record = config_maps
            .get_opt(fleetmesh_kube::discovery::INSTALL_CONFIG_MAP)
            .await
            .context("reading ConfigMap istio-system/fleetmesh-install")?
            .with_context(|| {
                "the cluster has no istio-system/fleetmesh-install (not installed with `fleetmesh install`?): \
                 pass --xds-address, --cluster, --cni-managed and --hub, or --offline"
            })?;
        Ok(Recorded::from_data(&record.data.unwrap_or_default()))
    }

    pub fn from_data(data: &std::collections::BTreeMap<String, String>) -> Recorded {
        Recorded {
            xds_address: data.get("xdsAddress").cloned(),
            cluster: data.get("cluster").cloned(),
            cni_managed: data.get("cniManaged").and_then(|v| v.parse().ok()),
            hub: data
                .get("hub")
                .filter(|h| fleetmesh_inject::channel::valid_hub(h))
                .cloned(),
        }
    }
}

/// The injected manifest, as multi-document YAML. `source` names the input in errors.
pub fn inject_manifest(text: &str, source: &str, settings: &Settings) -> anyhow::Result<String> {
    let mut out = Vec::new();
    for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let at = || format!("{source} (document {})", index + 1);
        let mut object: Value = Value::deserialize(document).with_context(at)?;
        if object.is_null() {
            continue;
        }
        inject_object(&mut object, settings).with_context(at)?;
        out.push(serde_yaml_ng::to_string(&object)?);
    }
    Ok(out.join("---\n"))
}

fn inject_object(object: &mut Value, settings: &Settings) -> anyhow::Result<()> {
    let kind = object["kind"].as_str().unwrap_or_default().to_string();
    let namespace = object["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default")
        .to_string();
    let template = match kind.as_str() {
        "Pod" => object,
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" | "Job" => {
            &mut object["spec"]["template"]
        }
        "CronJob" => &mut object["spec"]["jobTemplate"]["spec"]["template"],
        _ => return Ok(()),
    };
    let pod: Pod = serde_path_to_error::deserialize(template.clone())
        .map_err(|e| anyhow::anyhow!("{kind}: {}: {}", e.path(), e.inner()))?;
    let injected = match policy::decide(&pod, &namespace) {
        Decision::Inject(which) => template::inject(&pod, which, settings)?,
        Decision::Skip(_) => return Ok(()),
        Decision::Reject(reason) => anyhow::bail!("{kind}: {reason}"),
    };
    let mut rendered = serde_json::to_value(&injected)?;
    if kind != "Pod" {
        // A pod template has only metadata and spec.
        rendered = serde_json::json!({"metadata": rendered["metadata"], "spec": rendered["spec"]});
    }
    *template = rendered;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetmesh_inject::{Channel, InjectedBy, Revision, annotations};

    #[test]
    fn reads_what_install_recorded() {
        let data = [
            ("xdsAddress", "meshd.example:15012"),
            ("cluster", "prod-1"),
            ("cniManaged", "true"),
            ("hub", "registry.example.com/mesh"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into_iter()
        .collect();
        assert_eq!(
            Recorded::from_data(&data),
            Recorded {
                xds_address: Some("meshd.example:15012".into()),
                cluster: Some("prod-1".into()),
                cni_managed: Some(true),
                hub: Some("registry.example.com/mesh".into()),
            }
        );
        let unreadable = [("cniManaged", "maybe"), ("hub", "Not A Hub")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into_iter()
            .collect();
        assert_eq!(Recorded::from_data(&unreadable), Recorded::default());
    }

    #[test]
    fn injects_pod_templates_and_passes_the_rest_through() {
        let settings = Settings {
            revision: Revision::of(Channel::Regular),
            xds_address: "127.0.0.1:15010".into(),
            trust_domain: "cluster.local".into(),
            cluster_id: "c1".into(),
            cni_managed: false,
            injected_by: InjectedBy::KubeInject,
            proxy_version: None,
            hub: fleetmesh_inject::DEFAULT_HUB.into(),
            delta_xds: false,
        };
        let manifest = r#"
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {ports: [{port: 80}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: web:v1}]}
"#;
        let out = inject_manifest(manifest, "web.yaml", &settings).unwrap();
        let documents: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&out)
            .map(|d| Value::deserialize(d).unwrap())
            .collect();
        assert_eq!(documents[0]["kind"], "Service");
        assert!(documents[0]["metadata"].get("annotations").is_none());
        let template = &documents[1]["spec"]["template"];
        assert_eq!(template["spec"]["containers"][0]["name"], "istio-proxy");
        assert_eq!(
            template["metadata"]["annotations"][annotations::INJECTED_BY],
            "kube-inject"
        );
        let again = inject_manifest(&out, "out.yaml", &settings).unwrap();
        assert_eq!(again, out, "injecting twice changes nothing");
        let error = inject_manifest("kind: Pod\nspec: {containers: 3}\n", "bad.yaml", &settings)
            .unwrap_err();
        assert!(
            format!("{error:#}").contains("bad.yaml (document 1)"),
            "{error:#}"
        );
    }
}
