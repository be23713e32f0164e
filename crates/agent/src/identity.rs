use fleetmesh_api::peer;
use std::collections::BTreeMap;

/// Who the workload is, as Istio's agent tells the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadIdentity {
    /// `sidecar` or `router` (gateway).
    pub kind: String,
    pub pod_name: String,
    pub namespace: String,
    /// The workload address; in local mode a loopback address of its own (127.x.y.z).
    pub ip: String,
    /// Its other addresses, reported after `ip` in `INSTANCE_IPS` (a Pod's IP, for a
    /// proxy run outside the Pod; meshd matches a proxy to a Pod by name and IP).
    pub other_ips: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    pub cluster_id: String,
    pub mesh_id: String,
    /// `NONE` in local mode (no traffic capture), `REDIRECT` with iptables.
    pub interception_mode: String,
    pub istio_version: String,
}

impl WorkloadIdentity {
    /// Istio's node id: `TYPE~IP~POD.NAMESPACE~NAMESPACE.svc.cluster.local`.
    pub fn node_id(&self) -> String {
        format!(
            "{}~{}~{}.{}~{}.svc.cluster.local",
            self.kind, self.ip, self.pod_name, self.namespace, self.namespace
        )
    }

    /// Envoy's service cluster: `APP.NAMESPACE`, as Istio names it.
    pub fn service_cluster(&self) -> String {
        let app = self
            .labels
            .get("app")
            .cloned()
            .unwrap_or_else(|| self.pod_name.clone());
        format!("{app}.{}", self.namespace)
    }

    /// The environment Envoy is started with: what its workload says of itself in
    /// metric labels (see `fleetmesh_api::peer`).
    pub fn envoy_environment(&self) -> Vec<(&'static str, String)> {
        let workload = peer::workload_name(&self.pod_name, &self.labels);
        let mut values = peer::values(&workload, &self.namespace, &self.labels, &self.cluster_id);
        peer::ATTRIBUTES
            .iter()
            .map(|a| (a.env, values.remove(a.key).unwrap_or_default()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envoy_learns_its_workload_in_its_environment() {
        let identity = WorkloadIdentity {
            kind: "sidecar".into(),
            pod_name: "reviews-v1-7d9f8b6c5-x2k4p".into(),
            namespace: "shop".into(),
            ip: "10.0.0.1".into(),
            other_ips: Vec::new(),
            labels: [
                ("app", "reviews"),
                ("version", "v1"),
                ("pod-template-hash", "7d9f8b6c5"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            service_account: "reviews".into(),
            cluster_id: "east".into(),
            mesh_id: "cluster.local".into(),
            interception_mode: "REDIRECT".into(),
            istio_version: "1.28.0".into(),
        };
        assert_eq!(
            identity.envoy_environment(),
            [
                ("FLEETMESH_WORKLOAD_NAME", "reviews-v1".to_string()),
                ("FLEETMESH_WORKLOAD_NAMESPACE", "shop".to_string()),
                ("FLEETMESH_APP", "reviews".to_string()),
                ("FLEETMESH_VERSION", "v1".to_string()),
                ("FLEETMESH_CLUSTER", "east".to_string()),
            ]
        );
    }
}
