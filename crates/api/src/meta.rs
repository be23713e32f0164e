//! Kubernetes object metadata: the fields config resources use.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The subset of Kubernetes object metadata that config resources use.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    /// The object's name, unique in its namespace and kind.
    pub name: String,
    /// Its namespace (`default` when not given).
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Labels, which selectors match.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Annotations, which configure some behaviour (e.g. injection).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// The namespace of an object that names none, as kubectl has it.
pub fn default_namespace() -> String {
    "default".to_string()
}

impl ObjectMeta {
    /// `namespace/name`, the way errors and logs name an object.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}
