use crate::networking::Labels;
use serde::{Deserialize, Serialize};

/// A Kubernetes `Service` (the fields a mesh uses). Its `selector` picks WorkloadEntries
/// (and, in Kubernetes mode, Pods) by label.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSpec {
    #[serde(default)]
    pub ports: Vec<ServicePort>,
    #[serde(default)]
    pub selector: Labels,
    #[serde(rename = "type")]
    pub service_type: Option<String>,
    #[serde(rename = "clusterIP")]
    pub cluster_ip: Option<String>,
    pub session_affinity: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    pub name: Option<String>,
    pub port: u32,
    pub target_port: Option<TargetPort>,
    pub protocol: Option<String>,
    pub app_protocol: Option<String>,
}

/// `targetPort`: a number, or the name of a port of the selected workloads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum TargetPort {
    Number(u32),
    Name(String),
}
