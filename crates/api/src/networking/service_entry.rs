//! Istio's ServiceEntry.

use super::{Labels, WorkloadEntrySpec};
use serde::{Deserialize, Serialize};

/// Istio's ServiceEntry: a service the mesh should know that Kubernetes does not provide (outside
/// the mesh, or on WorkloadEntries).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceEntrySpec {
    /// The service's names: DNS names, or `*.` wildcards for hosts outside the mesh.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Virtual IPs of the service: single addresses, or CIDR ranges (resolution NONE or
    /// STATIC) whose every address a captured sidecar sends to the service.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// The ports the service serves.
    #[serde(default)]
    pub ports: Vec<ServiceEntryPort>,
    /// Whether its endpoints are part of the mesh (mTLS to them) or outside it.
    pub location: Option<Location>,
    /// How the proxies find the endpoints.
    pub resolution: Option<Resolution>,
    /// The endpoints, inline.
    #[serde(default)]
    pub endpoints: Vec<WorkloadEntrySpec>,
    /// The endpoints: WorkloadEntries (and pods) of this namespace with these labels.
    pub workload_selector: Option<WorkloadSelector>,
    /// The namespaces that see the service: `.` its own, `*` all (the default), or names.
    #[serde(default)]
    pub export_to: Vec<String>,
    /// Names the service's servers prove: checked by mTLS (ISTIO_MUTUAL) instead of its
    /// workloads' identities alone, and by TLS origination when the DestinationRule names
    /// none.
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
}

/// A port of a ServiceEntry.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
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

/// Where a ServiceEntry's endpoints are: MESH_EXTERNAL (outside the mesh: plain traffic unless a
/// DestinationRule says otherwise) or MESH_INTERNAL (workloads with sidecars, reached over mutual
/// TLS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[expect(
    missing_docs,
    reason = "described in the enum's doc: per-variant docs make the CRD schema one the API server refuses"
)]
pub enum Location {
    MeshExternal,
    MeshInternal,
}

/// How a ServiceEntry's endpoints are found: NONE (to the address the client asked for), STATIC
/// (the IP addresses listed), DNS (each endpoint's, or else the host's, name resolved by the proxy,
/// every address used) or DNS_ROUND_ROBIN (as DNS, one address at a time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
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

/// A selector of workloads by label (`{ labels: {...} }`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSelector {
    /// The labels a workload must have.
    #[serde(default)]
    pub labels: Labels,
}
