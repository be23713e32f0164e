//! Reconciles every DataPlaneControl's status from the cluster's pods and namespaces:
//! which injected pods of its revision are managed, and whether those run the target
//! proxy version. Polls (every `interval`); the status is written only when it changes.

use crate::control::{DataPlaneControl, DataPlaneControlStatus, ProxyMetrics, State};
use crate::opt_in::{self, OptIn};
use fleetmesh_inject::{Revision, annotations, labels};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};
use std::collections::BTreeMap;
use std::time::Duration;

/// Runs until dropped.
pub async fn run(client: kube::Client, interval: Duration) {
    loop {
        if let Err(e) = reconcile_all(&client).await {
            tracing::warn!(error = %format!("{e:#}"), "managed data plane: reconcile failed (retrying)");
        }
        tokio::time::sleep(interval).await;
    }
}

async fn reconcile_all(client: &kube::Client) -> anyhow::Result<()> {
    let controls: Api<DataPlaneControl> = Api::all(client.clone());
    let controls = match controls.list(&ListParams::default()).await {
        Ok(list) => list.items,
        // The CRD is not installed (yet): nothing to reconcile.
        Err(kube::Error::Api(status)) if status.code == 404 => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if controls.is_empty() {
        return Ok(());
    }
    let pods = Api::<Pod>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let namespaces = Api::<Namespace>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let api: Api<DataPlaneControl> = Api::all(client.clone());
    for control in &controls {
        let status = compute_status(control, &pods, &namespaces);
        if control.status.as_ref() == Some(&status) {
            continue;
        }
        let name = control.metadata.name.clone().unwrap_or_default();
        let patch = serde_json::json!({"status": status});
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        tracing::info!(revision = %control.spec.revision, state = ?status.state, "managed data plane status");
    }
    Ok(())
}

/// The status `control` should have, given the cluster's pods and namespaces.
pub fn compute_status(
    control: &DataPlaneControl,
    pods: &[Pod],
    namespaces: &[Namespace],
) -> DataPlaneControlStatus {
    let revision = control.spec.revision.as_str();
    let target = control
        .spec
        .proxy_version
        .clone()
        .or_else(|| Revision::named(revision).map(|r| r.proxy_version.to_string()));
    let namespace_opt_in: BTreeMap<&str, OptIn> = namespaces
        .iter()
        .filter_map(|n| {
            let name = n.metadata.name.as_deref()?;
            Some((name, opt_in::parse(annotation(&n.metadata))))
        })
        .collect();
    let mut metrics = ProxyMetrics {
        namespaces_enabled: namespace_opt_in
            .values()
            .filter(|o| **o == OptIn::Managed(true))
            .count() as u32,
        ..ProxyMetrics::default()
    };
    let mut outdated = 0u32;
    for pod in pods {
        let meta = &pod.metadata;
        let injected = meta
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(annotations::STATUS));
        let of_revision = meta
            .labels
            .as_ref()
            .and_then(|l| l.get(labels::REVISION))
            .is_some_and(|r| r == revision);
        if !injected || !of_revision {
            continue;
        }
        let pod_opt_in = opt_in::parse(annotation(meta));
        if pod_opt_in == OptIn::Managed(true) {
            metrics.pods_enabled += 1;
        }
        let namespace = meta.namespace.as_deref().unwrap_or_default();
        let namespace_opt_in = namespace_opt_in
            .get(namespace)
            .cloned()
            .unwrap_or(OptIn::Unset);
        if !opt_in::is_managed(&namespace_opt_in, &pod_opt_in) {
            metrics.unmanaged += 1;
            continue;
        }
        metrics.managed += 1;
        let version = meta
            .labels
            .as_ref()
            .and_then(|l| l.get(labels::PROXY_VERSION));
        if version != target.as_ref() {
            outdated += 1;
        }
    }
    // Nothing managed: nothing off target.
    let achieved = ((metrics.managed - outdated) * 10_000)
        .checked_div(metrics.managed)
        .unwrap_or(10_000);
    let wanted = control.spec.proxy_target_basis_points.unwrap_or(10_000);
    DataPlaneControlStatus {
        state: Some(if achieved >= wanted {
            State::Ready
        } else {
            State::Reconciling
        }),
        error_details: None,
        proxy_target_basis_points: Some(achieved),
        observed_generation: control.metadata.generation,
        proxy_metrics: Some(metrics),
    }
}

fn annotation(meta: &kube::api::ObjectMeta) -> Option<&str> {
    meta.annotations
        .as_ref()?
        .get(opt_in::ANNOTATION)
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn control(version: &str) -> DataPlaneControl {
        let mut control =
            crate::control::for_revision(Revision::named("asm-managed-rapid").unwrap());
        control.spec.proxy_version = Some(version.into());
        control
    }

    fn pod(namespace: &str, version: &str, opt_in: Option<&str>) -> Pod {
        let mut annotations = json!({"sidecar.istio.io/status": "{}"});
        if let Some(value) = opt_in {
            annotations[opt_in::ANNOTATION] = value.into();
        }
        serde_json::from_value(json!({
            "metadata": {"namespace": namespace, "annotations": annotations,
                         "labels": {"istio.io/rev": "asm-managed-rapid", "fleetmesh.io/proxy-version": version}},
        }))
        .unwrap()
    }

    fn namespace(name: &str, opt_in: Option<&str>) -> Namespace {
        let annotations = opt_in.map(|v| json!({ opt_in::ANNOTATION: v }));
        serde_json::from_value(json!({"metadata": {"name": name, "annotations": annotations}}))
            .unwrap()
    }

    #[test]
    fn counts_managed_pods_and_the_share_on_target() {
        let namespaces = [
            namespace("shop", Some(r#"{"managed":"true"}"#)),
            namespace("other", None),
        ];
        let pods = [
            pod("shop", "1.0", None),
            pod("shop", "0.9", None),
            pod("shop", "0.9", Some(r#"{"managed":"false"}"#)),
            pod("other", "0.9", None),
            pod("other", "1.0", Some(r#"{"managed":"true"}"#)),
        ];
        let status = compute_status(&control("1.0"), &pods, &namespaces);
        assert_eq!(
            status.proxy_metrics,
            Some(ProxyMetrics {
                managed: 3,
                unmanaged: 2,
                namespaces_enabled: 1,
                pods_enabled: 1
            })
        );
        assert_eq!(status.proxy_target_basis_points, Some(6666));
        assert_eq!(status.state, Some(State::Reconciling));
        let all_new = compute_status(&control("0.9"), &pods[1..4], &namespaces);
        assert_eq!(all_new.state, Some(State::Ready));
    }
}
