use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The subset of Kubernetes object metadata that config resources use.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    pub name: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

pub fn default_namespace() -> String {
    "default".to_string()
}

impl ObjectMeta {
    /// `namespace/name`, the way errors and logs name an object.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}
