//! Kubernetes Endpoints, as local files and the API server write them.

use crate::meta::ObjectMeta;
use serde::{Deserialize, Serialize};

/// A Kubernetes `Endpoints` object: the endpoints of the Service of the same name, for a
/// Service without selector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Endpoints {
    /// `v1`.
    pub api_version: String,
    /// `Endpoints`.
    pub kind: String,
    /// Named as the Service whose endpoints these are.
    pub metadata: ObjectMeta,
    /// Groups of addresses that share one set of ports.
    #[serde(default)]
    pub subsets: Vec<EndpointSubset>,
}

/// Addresses that all serve the same ports.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointSubset {
    /// The addresses ready to serve.
    #[serde(default)]
    pub addresses: Vec<EndpointAddress>,
    /// Known but not serving: never given traffic.
    #[serde(default)]
    pub not_ready_addresses: Vec<EndpointAddress>,
    /// The ports every address of the subset serves.
    #[serde(default)]
    pub ports: Vec<EndpointPort>,
}

/// One endpoint: a pod's or a machine's IP.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointAddress {
    /// An IPv4 or IPv6 address.
    pub ip: String,
    /// The endpoint's DNS name, for headless Services.
    pub hostname: Option<String>,
    /// The node the endpoint runs on.
    pub node_name: Option<String>,
}

/// A port of the endpoints, named as the Service's port it serves.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointPort {
    /// The Service port's name (required when the Service has several).
    pub name: Option<String>,
    /// The port the endpoints listen on.
    pub port: u32,
    /// `TCP` (the default), `UDP` or `SCTP`.
    pub protocol: Option<String>,
    /// The application protocol (`http`, `grpc`, ...), which decides how the mesh proxies it.
    pub app_protocol: Option<String>,
}
