//! What a proxy says of its own workload in Istio's metric labels (`source_workload`,
//! `destination_app`, ...): each attribute, the environment variable its agent sets for
//! Envoy (Envoy's `%ENVIRONMENT(..)%` reads it, so config shared by many proxies stays
//! shared) and the request header its sidecar sends it to the server's sidecar in
//! (upstream Envoy has no metadata exchange of its own). The agent writes the values,
//! meshd's xDS reads them (`fleetmesh_xds::telemetry`).

use std::collections::BTreeMap;

/// One attribute of a proxy's workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attribute {
    /// Its key in endpoint metadata and dynamic metadata, and Istio's label suffix
    /// (`source_<key>`; `namespace` is `source_workload_namespace`).
    pub key: &'static str,
    /// The environment variable the agent sets for Envoy.
    pub env: &'static str,
    /// The request header a client's sidecar sends it in.
    pub header: &'static str,
}

const fn attribute(key: &'static str, env: &'static str, header: &'static str) -> Attribute {
    Attribute { key, env, header }
}

/// Every attribute, in Istio's label order.
pub const ATTRIBUTES: [Attribute; 5] = [
    attribute(
        "workload",
        "FLEETMESH_WORKLOAD_NAME",
        "x-fleetmesh-peer-workload",
    ),
    attribute(
        "namespace",
        "FLEETMESH_WORKLOAD_NAMESPACE",
        "x-fleetmesh-peer-namespace",
    ),
    attribute("app", "FLEETMESH_APP", "x-fleetmesh-peer-app"),
    attribute("version", "FLEETMESH_VERSION", "x-fleetmesh-peer-version"),
    attribute("cluster", "FLEETMESH_CLUSTER", "x-fleetmesh-peer-cluster"),
];

/// The values of the attributes for a workload, by key: its name (see
/// [`workload_name`]), namespace, `app` and `version` labels (Istio's canonical
/// `service.istio.io/canonical-*` labels first) and cluster.
pub fn values(
    workload: &str,
    namespace: &str,
    labels: &BTreeMap<String, String>,
    cluster: &str,
) -> BTreeMap<&'static str, String> {
    let label = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| labels.get(*k))
            .cloned()
            .unwrap_or_default()
    };
    BTreeMap::from([
        ("workload", workload.to_string()),
        ("namespace", namespace.to_string()),
        (
            "app",
            label(&[
                "service.istio.io/canonical-name",
                "app.kubernetes.io/name",
                "app",
            ]),
        ),
        (
            "version",
            label(&[
                "service.istio.io/canonical-revision",
                "app.kubernetes.io/version",
                "version",
            ]),
        ),
        ("cluster", cluster.to_string()),
    ])
}

/// A Pod's workload as Istio names it: a Deployment's pod (`reviews-v1-7d9f8b6c5-x2k4p`,
/// label `pod-template-hash: 7d9f8b6c5`) is its Deployment's (`reviews-v1`); any other
/// pod is its own.
pub fn workload_name(pod_name: &str, labels: &BTreeMap<String, String>) -> String {
    let from_deployment = labels.get("pod-template-hash").and_then(|hash| {
        let (replica_set, _random) = pod_name.rsplit_once('-')?;
        replica_set.strip_suffix(&format!("-{hash}"))
    });
    from_deployment.unwrap_or(pod_name).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deployments_pod_is_its_deployments_workload() {
        let hash = BTreeMap::from([("pod-template-hash".to_string(), "7d9f8b6c5".to_string())]);
        assert_eq!(
            workload_name("reviews-v1-7d9f8b6c5-x2k4p", &hash),
            "reviews-v1"
        );
        assert_eq!(
            workload_name("reviews-v1-other-x2k4p", &hash),
            "reviews-v1-other-x2k4p"
        );
        assert_eq!(workload_name("ledger-0", &BTreeMap::new()), "ledger-0");
    }

    #[test]
    fn app_and_version_prefer_istios_canonical_labels() {
        let labels = BTreeMap::from([
            ("app".to_string(), "reviews".to_string()),
            ("version".to_string(), "v1".to_string()),
            (
                "service.istio.io/canonical-name".to_string(),
                "shop-reviews".to_string(),
            ),
        ]);
        let values = values("reviews-v1", "shop", &labels, "east");
        assert_eq!(values["app"], "shop-reviews");
        assert_eq!(values["version"], "v1");
        assert_eq!(values.len(), ATTRIBUTES.len());
        assert!(ATTRIBUTES.iter().all(|a| values.contains_key(a.key)));
    }
}
