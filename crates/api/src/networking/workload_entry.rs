//! Istio's WorkloadEntry.

use super::Labels;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A workload outside Kubernetes (or, in local mode, any workload): an address with labels.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadEntrySpec {
    /// Its IP address or DNS name (or `unix://` path); none for one reached through its `network`'s
    /// gateway.
    #[serde(default)]
    pub address: String,
    /// Service port name → this endpoint's port.
    #[serde(default)]
    pub ports: BTreeMap<String, u32>,
    /// Its labels, which Services' and ServiceEntries' selectors match.
    #[serde(default)]
    pub labels: Labels,
    /// The network it is on, when it is not the proxies' own.
    pub network: Option<String>,
    /// Its locality, `region/zone/subzone`, for locality-aware balancing.
    pub locality: Option<String>,
    /// Its weight among the service's endpoints.
    pub weight: Option<u32>,
    /// The service account its workload runs as, which its certificate names.
    pub service_account: Option<String>,
}
