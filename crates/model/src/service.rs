use crate::host::ExportTo;
pub use fleetmesh_api::protocol::Protocol;
use fleetmesh_api::validate::security::parse_cidr;
use std::collections::BTreeMap;

/// Kubernetes-style labels.
pub type Labels = BTreeMap<String, String>;

/// A service of the mesh: a host with ports, endpoints and visibility.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    /// Fully qualified: `reviews.default.svc.cluster.local`, or a ServiceEntry host.
    pub hostname: String,
    /// Where it is defined (a Service's namespace, a ServiceEntry's).
    pub namespace: String,
    /// The virtual IPs clients dial (a Kubernetes ClusterIP, a ServiceEntry's
    /// `addresses`): a captured sidecar tells a TCP service's connections by them, since
    /// TCP carries no host name. Empty for headless services.
    pub addresses: Vec<std::net::IpAddr>,
    /// The address ranges of a ServiceEntry's `addresses` (`192.168.0.0/16`): a captured
    /// sidecar sends connections to any address in them to the service.
    pub address_ranges: Vec<AddressRange>,
    /// Its ports, in declaration order.
    pub ports: Vec<ServicePort>,
    /// Where its traffic goes (a DNS service's host names included).
    pub endpoints: Vec<Endpoint>,
    /// Which namespaces may see it.
    pub export_to: ExportTo,
    /// Kubernetes selector (empty for ServiceEntries): which workloads serve it.
    pub selector: Labels,
    /// How a proxy finds its endpoints.
    pub resolution: Resolution,
    /// Outside the mesh (a ServiceEntry with `location: MESH_EXTERNAL`).
    pub mesh_external: bool,
    /// Certificate names its servers prove (a ServiceEntry's `subjectAltNames`; empty for
    /// Kubernetes Services).
    pub subject_alt_names: Vec<String>,
}

/// How a service's endpoints are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Endpoints are known addresses (EDS).
    Static,
    /// Envoy resolves the endpoint hostnames itself.
    Dns,
    /// Traffic goes where the client sent it.
    Passthrough,
}

/// One port of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// Its name (Istio reads the protocol from a prefix such as `http-`).
    pub name: String,
    /// The port clients dial.
    pub port: u32,
    /// What it speaks.
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
    /// The Pod's namespace.
    pub namespace: String,
    /// The Pod's name.
    pub name: String,
    /// The Pod's IP, once it has one.
    pub ip: Option<String>,
    /// The Pod's labels.
    pub labels: Labels,
    /// The Pod's service account.
    pub service_account: Option<String>,
}

/// One address serving a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// An IP, or a host name a DNS service resolves.
    pub address: String,
    /// Service port number → the port this endpoint listens on.
    pub ports: BTreeMap<u32, u32>,
    /// The workload's labels (subsets select by them).
    pub labels: Labels,
    /// `region/zone`, when known.
    pub locality: Option<String>,
    /// Its share of the service's traffic (Istio's default is 1).
    pub weight: u32,
    /// The workload's service account: the identity its peers verify.
    pub service_account: Option<String>,
    /// Which cluster (or, in local mode, `local`) the endpoint came from.
    pub cluster_id: String,
    /// Its workload as Istio names it (a Pod's Deployment, a WorkloadEntry's name), when
    /// known: metric labels say who answered.
    pub workload: Option<String>,
}

impl Service {
    /// The port numbered `number`, if the service has it.
    pub fn port(&self, number: u32) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.port == number)
    }
}

/// The virtual IP a ClusterIP or ServiceEntry address names (`10.0.0.1`, or
/// `10.0.0.1/32`): none for a headless service (`None`) or a range of addresses.
pub fn virtual_ip(address: &str) -> Option<std::net::IpAddr> {
    parse_cidr(address)
        .filter(|(ip, prefix_len)| *prefix_len == full_prefix(ip))
        .map(|(ip, _)| ip)
}

/// A range of addresses (`192.168.0.0/16`) that names a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct AddressRange {
    /// Its first address (as written: `192.168.1.7/16` keeps `192.168.1.7`, and the
    /// range is still 192.168.0.0/16, as Envoy reads it).
    pub address: std::net::IpAddr,
    /// How many leading bits the range fixes.
    pub prefix_len: u32,
}

/// The range a ServiceEntry address names, if it is one (a single address is a
/// [`virtual_ip`]).
pub fn address_range(address: &str) -> Option<AddressRange> {
    parse_cidr(address)
        .filter(|(ip, prefix_len)| *prefix_len < full_prefix(ip))
        .map(|(address, prefix_len)| AddressRange {
            address,
            prefix_len,
        })
}

fn full_prefix(ip: &std::net::IpAddr) -> u32 {
    if ip.is_ipv4() { 32 } else { 128 }
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
