//! Which managed pod to evict next (pure): a pod whose injected proxy is not on its
//! revision's target version, owned by a ReplicaSet (a Deployment brings it back, freshly
//! injected), never a second pod of a Deployment while one of its pods is not Ready, and
//! pods whose PodDisruptionBudget has headroom first; namespaces take turns.

use crate::opt_in::{self, OptIn};
use fleetmesh_inject::{annotations, labels};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use std::collections::{BTreeMap, BTreeSet};

/// Namespaces whose pods are never evicted.
const SYSTEM_NAMESPACES: [&str; 4] = [
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "istio-system",
];

/// Why a pod is not a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// It has no proxy.
    NoProxy,
    /// Injected by `fleetmesh kube-inject`: evicting it would bring back the same proxy.
    HandInjected,
    /// Not owned by a ReplicaSet (a Job, StatefulSet, DaemonSet or bare pod).
    NotReplicated,
    /// It shares the node's network (no capture to upgrade).
    HostNetwork,
    /// It runs in a system namespace.
    SystemNamespace,
    /// Neither it nor its namespace opted in.
    Unmanaged,
    /// It already runs the target version.
    OnTarget,
    /// It is going away.
    Terminating,
}

#[derive(Debug, Clone, PartialEq, Eq)]
/// A pod that may be evicted.
pub struct Candidate {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The revision that injected it.
    pub revision: String,
    /// `namespace/deployment`: one eviction at a time per owner.
    pub owner: String,
    /// Its PodDisruptionBudget allows a disruption now (or it has none).
    pub headroom: bool,
}

/// What the plan is made from.
pub struct Inputs<'a> {
    /// Every pod of the cluster.
    pub pods: &'a [Pod],
    /// Each namespace's opt-in.
    pub namespaces: &'a BTreeMap<String, OptIn>,
    /// Every PodDisruptionBudget of the cluster.
    pub budgets: &'a [PodDisruptionBudget],
    /// Revision → the proxy version its managed pods should run.
    pub targets: &'a BTreeMap<String, String>,
    /// Evictions done so far per namespace (for turns).
    pub evicted: &'a BTreeMap<String, u32>,
    /// Pods to leave alone for now (`namespace/name`: their eviction was refused lately).
    pub backing_off: &'a BTreeSet<String>,
}

/// The pod to evict next, if any.
pub fn next(inputs: &Inputs) -> Option<Candidate> {
    let busy = busy_owners(inputs.pods);
    let mut candidates: Vec<Candidate> = inputs
        .pods
        .iter()
        .filter_map(|pod| candidate(pod, inputs).ok())
        .filter(|c| !busy.contains(&c.owner))
        .filter(|c| {
            !inputs
                .backing_off
                .contains(&format!("{}/{}", c.namespace, c.name))
        })
        .collect();
    candidates.sort_by_key(|c| {
        (
            !c.headroom,
            inputs.evicted.get(&c.namespace).copied().unwrap_or(0),
            c.namespace.clone(),
            c.name.clone(),
        )
    });
    candidates.into_iter().next()
}

/// Every managed pod off its target that could be evicted, ignoring pacing.
pub fn outdated<'a>(inputs: &'a Inputs) -> impl Iterator<Item = Candidate> + 'a {
    inputs
        .pods
        .iter()
        .filter_map(|pod| candidate(pod, inputs).ok())
}

/// Whether `pod` is a candidate, and if not why.
pub fn candidate(pod: &Pod, inputs: &Inputs) -> Result<Candidate, Skip> {
    let meta = &pod.metadata;
    let annotation = |key: &str| meta.annotations.as_ref().and_then(|a| a.get(key));
    let label = |key: &str| meta.labels.as_ref().and_then(|l| l.get(key));
    let namespace = meta.namespace.clone().unwrap_or_default();
    if annotation(annotations::STATUS).is_none() {
        return Err(Skip::NoProxy);
    }
    if annotation(annotations::INJECTED_BY).is_some_and(|by| by == "kube-inject") {
        return Err(Skip::HandInjected);
    }
    let Some(owner) = replica_set_owner(pod) else {
        return Err(Skip::NotReplicated);
    };
    if pod.spec.as_ref().and_then(|s| s.host_network) == Some(true) {
        return Err(Skip::HostNetwork);
    }
    if SYSTEM_NAMESPACES.contains(&namespace.as_str()) {
        return Err(Skip::SystemNamespace);
    }
    if meta.deletion_timestamp.is_some() {
        return Err(Skip::Terminating);
    }
    let namespace_opt_in = inputs
        .namespaces
        .get(&namespace)
        .cloned()
        .unwrap_or(OptIn::Unset);
    let pod_opt_in = opt_in::parse(annotation(opt_in::ANNOTATION).map(String::as_str));
    if !opt_in::is_managed(&namespace_opt_in, &pod_opt_in) {
        return Err(Skip::Unmanaged);
    }
    let revision = label(labels::REVISION).cloned().unwrap_or_default();
    let target = inputs.targets.get(&revision);
    if target.is_none() || label(labels::PROXY_VERSION) == target {
        return Err(Skip::OnTarget);
    }
    let headroom = inputs
        .budgets
        .iter()
        .filter(|b| b.metadata.namespace.as_deref() == Some(namespace.as_str()))
        .filter(|b| selects(b, pod))
        .all(|b| b.status.as_ref().is_some_and(|s| s.disruptions_allowed > 0));
    Ok(Candidate {
        owner: format!("{namespace}/{owner}"),
        namespace,
        name: meta.name.clone().unwrap_or_default(),
        revision,
        headroom,
    })
}

/// The Deployment (its ReplicaSet's name without the pod-template hash) of a pod a
/// ReplicaSet owns.
fn replica_set_owner(pod: &Pod) -> Option<String> {
    let owner = pod
        .metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.kind == "ReplicaSet" && o.controller == Some(true))?;
    let hash = pod.metadata.labels.as_ref()?.get("pod-template-hash");
    Some(match hash {
        Some(hash) => owner
            .name
            .strip_suffix(&format!("-{hash}"))
            .unwrap_or(&owner.name)
            .to_string(),
        None => owner.name.clone(),
    })
}

/// Owners with a pod that is not Ready (a replacement still starting, or one being
/// evicted): their next eviction waits.
fn busy_owners(pods: &[Pod]) -> BTreeSet<String> {
    pods.iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_some() || !is_ready(pod))
        .filter_map(|pod| {
            let namespace = pod.metadata.namespace.as_deref()?;
            Some(format!("{namespace}/{}", replica_set_owner(pod)?))
        })
        .collect()
}

/// Whether the pod's Ready condition is true.
pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn selects(budget: &PodDisruptionBudget, pod: &Pod) -> bool {
    let Some(selector) = budget.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
        return false;
    };
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let labels_match = selector
        .match_labels
        .as_ref()
        .is_none_or(|m| m.iter().all(|(k, v)| labels.get(k) == Some(v)));
    let expressions_match = selector.match_expressions.iter().flatten().all(|e| {
        let value = labels.get(&e.key);
        let values = e.values.clone().unwrap_or_default();
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    labels_match && expressions_match
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(namespace: &str, name: &str, version: &str, extra: serde_json::Value) -> Pod {
        let mut value = json!({
            "metadata": {
                "namespace": namespace, "name": name,
                "labels": {"app": "web", "istio.io/rev": "asm-managed-rapid",
                           "fleetmesh.io/proxy-version": version, "pod-template-hash": "5f7d8c9b4"},
                "annotations": {"sidecar.istio.io/status": "{}", "fleetmesh.io/injected-by": "webhook"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5f7d8c9b4",
                                     "uid": "u", "controller": true}],
            },
            "spec": {"containers": []},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        });
        merge(&mut value, extra);
        serde_json::from_value(value).unwrap()
    }

    fn merge(into: &mut serde_json::Value, from: serde_json::Value) {
        match (into, from) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (slot, value) => *slot = value,
        }
    }

    fn budget(namespace: &str, allowed: i32) -> PodDisruptionBudget {
        serde_json::from_value(json!({
            "metadata": {"namespace": namespace, "name": "web"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}},
            "status": {"disruptionsAllowed": allowed, "currentHealthy": 3, "desiredHealthy": 2, "expectedPods": 3},
        }))
        .unwrap()
    }

    fn managed(namespaces: &[&str]) -> BTreeMap<String, OptIn> {
        namespaces
            .iter()
            .map(|n| (n.to_string(), OptIn::Managed(true)))
            .collect()
    }

    fn targets() -> BTreeMap<String, String> {
        [("asm-managed-rapid".to_string(), "2.0".to_string())].into()
    }

    fn plan(
        pods: &[Pod],
        budgets: &[PodDisruptionBudget],
        evicted: &BTreeMap<String, u32>,
    ) -> Option<Candidate> {
        next(&Inputs {
            pods,
            namespaces: &managed(&["a", "b"]),
            budgets,
            targets: &targets(),
            evicted,
            backing_off: &BTreeSet::new(),
        })
    }

    #[test]
    fn skips_what_a_rollout_must_not_touch() {
        let inputs = Inputs {
            pods: &[],
            namespaces: &managed(&["a", "kube-system"]),
            budgets: &[],
            targets: &targets(),
            evicted: &BTreeMap::new(),
            backing_off: &BTreeSet::new(),
        };
        let cases = [
            (
                json!({"metadata": {"annotations": {"sidecar.istio.io/status": null}}}),
                Skip::NoProxy,
            ),
            (
                json!({"metadata": {"annotations": {"fleetmesh.io/injected-by": "kube-inject"}}}),
                Skip::HandInjected,
            ),
            (
                json!({"metadata": {"ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": "u", "controller": true}]}}),
                Skip::NotReplicated,
            ),
            (
                json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "s", "uid": "u", "controller": true}]}}),
                Skip::NotReplicated,
            ),
            (
                json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "d", "uid": "u", "controller": true}]}}),
                Skip::NotReplicated,
            ),
            (
                json!({"metadata": {"ownerReferences": []}}),
                Skip::NotReplicated,
            ),
            (json!({"spec": {"hostNetwork": true}}), Skip::HostNetwork),
            (
                json!({"metadata": {"annotations": {"mesh.cloud.google.com/proxy": "{\"managed\":\"false\"}"}}}),
                Skip::Unmanaged,
            ),
            (
                json!({"metadata": {"annotations": {"mesh.cloud.google.com/proxy": "nonsense"}}}),
                Skip::Unmanaged,
            ),
            (
                json!({"metadata": {"labels": {"fleetmesh.io/proxy-version": "2.0"}}}),
                Skip::OnTarget,
            ),
        ];
        for (extra, expected) in cases {
            let mut value = extra.clone();
            // A null annotation removes it.
            let pod = pod("a", "web-1", "1.0", json!({}));
            let mut pod_value = serde_json::to_value(&pod).unwrap();
            merge(&mut pod_value, value.take());
            if let Some(annotations) = pod_value["metadata"]["annotations"].as_object_mut() {
                annotations.retain(|_, v| !v.is_null());
            }
            let pod: Pod = serde_json::from_value(pod_value).unwrap();
            assert_eq!(candidate(&pod, &inputs), Err(expected), "{extra}");
        }
        let system = pod("kube-system", "web-1", "1.0", json!({}));
        assert_eq!(candidate(&system, &inputs), Err(Skip::SystemNamespace));
        let unmanaged_namespace = pod("c", "web-1", "1.0", json!({}));
        assert_eq!(
            candidate(&unmanaged_namespace, &inputs),
            Err(Skip::Unmanaged)
        );
        assert!(candidate(&pod("a", "web-1", "1.0", json!({})), &inputs).is_ok());
    }

    #[test]
    fn one_pod_per_deployment_until_its_replacement_is_ready() {
        let ready = [
            pod("a", "web-1", "1.0", json!({})),
            pod("a", "web-2", "1.0", json!({})),
        ];
        assert_eq!(plan(&ready, &[], &BTreeMap::new()).unwrap().name, "web-1");
        let starting = [
            pod("a", "web-1", "1.0", json!({})),
            pod(
                "a",
                "web-3",
                "2.0",
                json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
            ),
        ];
        assert_eq!(
            plan(&starting, &[], &BTreeMap::new()),
            None,
            "the replacement is not Ready yet"
        );
    }

    #[test]
    fn prefers_headroom_and_takes_namespaces_in_turn() {
        let pods = [
            pod("a", "web-1", "1.0", json!({})),
            pod("b", "web-1", "1.0", json!({})),
        ];
        assert_eq!(
            plan(&pods, &[budget("a", 0)], &BTreeMap::new())
                .unwrap()
                .namespace,
            "b"
        );
        let no_headroom = plan(&pods, &[budget("a", 0), budget("b", 0)], &BTreeMap::new()).unwrap();
        assert!(
            !no_headroom.headroom,
            "still tried: the API server has the last word"
        );
        let evicted = [("a".to_string(), 3)].into();
        assert_eq!(
            plan(&pods, &[], &evicted).unwrap().namespace,
            "b",
            "b's turn"
        );
    }
}
