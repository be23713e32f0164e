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
}
