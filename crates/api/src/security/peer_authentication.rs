//! Istio's PeerAuthentication.

use super::WorkloadSelector;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Which traffic a workload's sidecar accepts: mutual TLS only, plaintext too, or
/// plaintext only. Mesh-wide in the root namespace, per namespace, or per workload.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerAuthenticationSpec {
    /// The workloads of its namespace it applies to (none: the whole namespace; in the root
    /// namespace: the mesh).
    pub selector: Option<WorkloadSelector>,
    /// The mutual TLS mode for every port.
    pub mtls: Option<MutualTls>,
    /// By workload (container) port; only with a `selector`. (The schema says string keys:
    /// Kubernetes' structural schemas have no integer-keyed maps, and JSON keys are
    /// strings anyway.)
    #[serde(default, deserialize_with = "port_keys")]
    #[schemars(with = "BTreeMap<String, MutualTls>")]
    pub port_level_mtls: BTreeMap<u32, MutualTls>,
}

/// A mutual TLS setting.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MutualTls {
    /// What the sidecar accepts.
    #[serde(default)]
    pub mode: MtlsMode,
}

/// What a sidecar accepts inbound.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    /// Inherit from the parent scope (namespace, then mesh; PERMISSIVE at the top).
    #[default]
    Unset,
    /// Plaintext only.
    Disable,
    /// Mutual TLS and plaintext.
    Permissive,
    /// Mutual TLS only.
    Strict,
}

/// A port as a map key: `9080` in YAML, `"9080"` once Kubernetes has stored it.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct PortKey(u32);

impl<'de> Deserialize<'de> for PortKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<PortKey, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = PortKey;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a port number")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<PortKey, E> {
                u32::try_from(v)
                    .map(PortKey)
                    .map_err(|_| E::custom(format!("{v} is not a port number")))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<PortKey, E> {
                u32::try_from(v)
                    .map(PortKey)
                    .map_err(|_| E::custom(format!("{v} is not a port number")))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<PortKey, E> {
                v.parse()
                    .map(PortKey)
                    .map_err(|_| E::custom(format!("{v:?} is not a port number")))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

fn port_keys<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<u32, MutualTls>, D::Error> {
    let by_key = BTreeMap::<PortKey, MutualTls>::deserialize(deserializer)?;
    Ok(by_key.into_iter().map(|(k, v)| (k.0, v)).collect())
}
