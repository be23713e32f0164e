//! Kubernetes Services: the fields a mesh reads.

use crate::networking::Labels;
use serde::{Deserialize, Serialize};

/// A Kubernetes `Service` (the fields a mesh uses). Its `selector` picks WorkloadEntries
/// (and, in Kubernetes mode, Pods) by label.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSpec {
    /// The ports the Service exposes.
    #[serde(default)]
    pub ports: Vec<ServicePort>,
    /// The labels of the pods that serve it.
    #[serde(default)]
    pub selector: Labels,
    /// `ClusterIP` (the default), `NodePort`, `LoadBalancer` or `ExternalName`.
    #[serde(rename = "type")]
    pub service_type: Option<String>,
    /// The virtual IP, or `None` for a headless Service.
    #[serde(rename = "clusterIP")]
    pub cluster_ip: Option<String>,
    /// `ClientIP` pins each client to one endpoint; `None` does not.
    pub session_affinity: Option<String>,
}

/// One port of a Service.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    /// Its name; with Istio's prefixes (`http-`, `grpc-`, `tcp-`...) it names the protocol.
    pub name: Option<String>,
    /// The port clients connect to.
    pub port: u32,
    /// The pods' port: a number or a container port's name (default: `port`).
    pub target_port: Option<TargetPort>,
    /// `TCP` (the default), `UDP` or `SCTP`.
    pub protocol: Option<String>,
    /// The application protocol, which takes precedence over the name's prefix.
    pub app_protocol: Option<String>,
}

/// `targetPort`: a number, or the name of a port of the selected workloads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
#[expect(
    missing_docs,
    reason = "described in the enum's doc: per-variant docs make the CRD schema one the API server refuses"
)]
pub enum TargetPort {
    Number(u32),
    Name(String),
}
