//! Istio's ServiceEntry.

use super::{Labels, WorkloadEntrySpec};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
/// Istio's ServiceEntry: a service the mesh should know that Kubernetes does not provide (outside
/// the mesh, or on WorkloadEntries).
pub struct ServiceEntrySpec {
    #[serde(default)]
    /// The service's names: DNS names, or `*.` wildcards for hosts outside the mesh.
    pub hosts: Vec<String>,
    #[serde(default)]
    /// Virtual IPs of the service (single addresses; CIDR ranges are not applied yet).
    pub addresses: Vec<String>,
    #[serde(default)]
    /// The ports the service serves.
    pub ports: Vec<ServiceEntryPort>,
    /// Whether its endpoints are part of the mesh (mTLS to them) or outside it.
    pub location: Option<Location>,
    /// How the proxies find the endpoints.
    pub resolution: Option<Resolution>,
    #[serde(default)]
    /// The endpoints, inline.
    pub endpoints: Vec<WorkloadEntrySpec>,
    /// The endpoints: WorkloadEntries (and pods) of this namespace with these labels.
    pub workload_selector: Option<WorkloadSelector>,
    #[serde(default)]
    /// The namespaces that see the service: `.` its own, `*` all (the default), or names.
    pub export_to: Vec<String>,
    /// Names the service's servers prove: checked by mTLS (ISTIO_MUTUAL) instead of its
    /// workloads' identities alone, and by TLS origination when the DestinationRule names
    /// none.
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
/// A port of a ServiceEntry.
pub struct ServiceEntryPort {
    /// The port clients connect to.
    pub number: u32,
    /// `HTTP`, `HTTPS`, `GRPC`, `HTTP2`, `MONGO`, `TCP` or `TLS`.
    pub protocol: Option<String>,
    /// The port's name, which endpoints' `ports` maps refer to.
    pub name: String,
    /// The endpoints' port, when it differs.
    pub target_port: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
/// Where a ServiceEntry's endpoints are: MESH_EXTERNAL (outside the mesh: plain traffic unless a
/// DestinationRule says otherwise) or MESH_INTERNAL (workloads with sidecars, reached over mutual
/// TLS).
#[expect(
    missing_docs,
    reason = "described in the enum's doc: per-variant docs make the CRD schema one the API server refuses"
)]
pub enum Location {
    MeshExternal,
    MeshInternal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
/// How a ServiceEntry's endpoints are found: NONE (to the address the client asked for), STATIC
/// (the IP addresses listed), DNS (each endpoint's, or else the host's, name resolved by the proxy,
/// every address used) or DNS_ROUND_ROBIN (as DNS, one address at a time).
#[expect(
    missing_docs,
    reason = "described in the enum's doc: per-variant docs make the CRD schema one the API server refuses"
)]
pub enum Resolution {
    None,
    Static,
    Dns,
    DnsRoundRobin,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
/// A selector of workloads by label (`{ labels: {...} }`).
pub struct WorkloadSelector {
    #[serde(default)]
    /// The labels a workload must have.
    pub labels: Labels,
}
