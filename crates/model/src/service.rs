use crate::host::ExportTo;
pub use fleetmesh_api::protocol::Protocol;
use std::collections::BTreeMap;

pub type Labels = BTreeMap<String, String>;

/// A service of the mesh: a host with ports, endpoints and visibility.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    /// Fully qualified: `reviews.default.svc.cluster.local`, or a ServiceEntry host.
    pub hostname: String,
    pub namespace: String,
    /// The virtual IPs clients dial (a Kubernetes ClusterIP, a ServiceEntry's
    /// `addresses`): a captured sidecar tells a TCP service's connections by them, since
    /// TCP carries no host name. Empty for headless services.
    pub addresses: Vec<std::net::IpAddr>,
    pub ports: Vec<ServicePort>,
    pub endpoints: Vec<Endpoint>,
    pub export_to: ExportTo,
    /// Kubernetes selector (empty for ServiceEntries): which workloads serve it.
    pub selector: Labels,
    pub resolution: Resolution,
    pub mesh_external: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Endpoints are known addresses (EDS).
    Static,
    /// Envoy resolves the endpoint hostnames itself.
    Dns,
    /// Traffic goes where the client sent it.
    Passthrough,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    pub name: String,
    pub port: u32,
    pub protocol: Protocol,
    /// The port workloads listen on when the endpoint names none.
    pub target_port: u32,
}

impl ServicePort {
    /// A Kubernetes Service port: its protocol from `appProtocol` or Istio's name
    /// convention; its target port when numeric (a named one is looked up per endpoint,
    /// and the service port stands in for it here).
    pub fn kube(
        name: Option<&str>,
        port: u32,
        numeric_target: Option<u32>,
        app_protocol: Option<&str>,
    ) -> ServicePort {
        let name = name.unwrap_or_default().to_string();
        ServicePort {
            protocol: Protocol::detect(app_protocol, &name),
            name,
            port,
            target_port: numeric_target.unwrap_or(port),
        }
    }
}

/// A workload a cluster knows (a Pod): what a proxy claiming to be it really is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub namespace: String,
    pub name: String,
    pub ip: Option<String>,
    pub labels: Labels,
    pub service_account: Option<String>,
}

/// One address serving a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub address: String,
    /// Service port number → the port this endpoint listens on.
    pub ports: BTreeMap<u32, u32>,
    pub labels: Labels,
    pub locality: Option<String>,
    pub weight: u32,
    pub service_account: Option<String>,
    /// Which cluster (or, in local mode, `local`) the endpoint came from.
    pub cluster_id: String,
}

impl Service {
    pub fn port(&self, number: u32) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.port == number)
    }
}

/// The virtual IP in a ClusterIP or ServiceEntry address: none for a headless service
/// (`None`), an unset one, or a CIDR (which names no single address to listen on).
pub fn virtual_ips(address: Option<&str>) -> Vec<std::net::IpAddr> {
    address.and_then(|a| a.parse().ok()).into_iter().collect()
}

/// Whether every `selector` label is among `labels` (an empty selector selects nothing,
/// as a Kubernetes Service without selector has no automatic endpoints).
pub fn selects(selector: &Labels, labels: &Labels) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Subset selection: every label matches (an empty set matches all).
pub fn labels_match(required: &Labels, labels: &Labels) -> bool {
    required.iter().all(|(k, v)| labels.get(k) == Some(v))
}
