//! Istio's MeshConfig (the `mesh` key of ConfigMap `istio`): the fields meshd supports,
//! and the names of those it does not, so they can be reported instead of ignored.

use serde::Deserialize;
use std::collections::BTreeMap;

/// Istio's MeshConfig: the fields meshd applies, and the others by name.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshConfigSpec {
    /// The namespace whose policies apply mesh-wide (default `istio-system`).
    pub root_namespace: Option<String>,
    /// The identity domain; meshd keeps its CA's and warns when this differs.
    pub trust_domain: Option<String>,
    /// What sidecars do with captured traffic to a host the mesh does not know.
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
    /// The telemetry providers used where no Telemetry resource says otherwise.
    pub default_providers: Option<DefaultProviders>,
    /// Every other field, by name: accepted, not applied.
    #[serde(flatten)]
    pub unsupported: BTreeMap<String, serde_yaml_ng::Value>,
}

/// MeshConfig's `defaultProviders`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DefaultProviders {
    /// The metrics providers: `prometheus` (Istio's standard workload metrics, the
    /// default) or none (`[]`: the sidecars keep no workload metrics, which saves their
    /// per-request cost).
    pub metrics: Option<Vec<String>>,
    /// Every other field (`tracing`, `accessLogging`), by name: accepted, not applied.
    #[serde(flatten)]
    pub unsupported: BTreeMap<String, serde_yaml_ng::Value>,
}

impl MeshConfigSpec {
    /// The names of the fields meshd accepts and does not apply (`defaultProviders.X`
    /// for those inside it).
    pub fn unsupported_fields(&self) -> Vec<String> {
        let inner = self
            .default_providers
            .iter()
            .flat_map(|p| p.unsupported.keys());
        self.unsupported
            .keys()
            .cloned()
            .chain(inner.map(|k| format!("defaultProviders.{k}")))
            .collect()
    }

    /// Whether the sidecars keep Istio's standard workload metrics: unless
    /// `defaultProviders.metrics` is given without `prometheus`.
    pub fn workload_metrics(&self) -> Option<bool> {
        let metrics = self.default_providers.as_ref()?.metrics.as_ref()?;
        Some(metrics.iter().any(|m| m == "prometheus"))
    }
}

/// MeshConfig's `outboundTrafficPolicy`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutboundTrafficPolicy {
    /// `ALLOW_ANY` (the default) or `REGISTRY_ONLY`.
    pub mode: Option<OutboundMode>,
}

/// Where captured traffic to unknown hosts goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundMode {
    /// Passed through to the address the app asked for.
    AllowAny,
    /// Refused: only hosts of the registry (Services, ServiceEntries) are reachable.
    RegistryOnly,
}

/// Why a MeshConfig is refused.
#[derive(Debug, thiserror::Error)]
pub enum MeshConfigError {
    /// The text is not YAML.
    #[error("not YAML: {0}")]
    Yaml(#[from] serde_yaml_ng::Error),
    /// A field of the wrong type or value.
    #[error("{path}: {reason}")]
    Field {
        /// Where the field is, e.g. `outboundTrafficPolicy.mode`.
        path: String,
        /// What is wrong with its value.
        reason: String,
    },
}

/// Parses the `mesh` text; the error names the field and the reason.
pub fn parse(text: &str) -> Result<MeshConfigSpec, MeshConfigError> {
    let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(text)?;
    if value.is_null() {
        return Ok(MeshConfigSpec::default());
    }
    serde_path_to_error::deserialize(value).map_err(|e| MeshConfigError::Field {
        path: e.path().to_string(),
        reason: e.into_inner().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supported_fields_and_the_rest() {
        let mesh = parse("rootNamespace: mesh-root\ntrustDomain: example.org\noutboundTrafficPolicy: {mode: REGISTRY_ONLY}\naccessLogFile: /dev/stdout\n").unwrap();
        assert_eq!(mesh.root_namespace.as_deref(), Some("mesh-root"));
        assert_eq!(mesh.trust_domain.as_deref(), Some("example.org"));
        assert_eq!(
            mesh.outbound_traffic_policy.unwrap().mode,
            Some(OutboundMode::RegistryOnly)
        );
        assert_eq!(
            mesh.unsupported.keys().collect::<Vec<_>>(),
            ["accessLogFile"]
        );
        assert_eq!(parse("").unwrap(), MeshConfigSpec::default());
        let error = parse("outboundTrafficPolicy: {mode: SOMETIMES}").unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("outboundTrafficPolicy.mode: unknown variant `SOMETIMES`"),
            "{error}"
        );
        assert!(matches!(
            parse("outboundTrafficPolicy: [").unwrap_err(),
            MeshConfigError::Yaml(_)
        ));
    }

    #[test]
    fn workload_metrics_unless_the_default_providers_leave_prometheus_out() {
        let metrics = |text: &str| parse(text).unwrap().workload_metrics();
        assert_eq!(metrics(""), None);
        assert_eq!(metrics("defaultProviders: {tracing: [zipkin]}"), None);
        assert_eq!(
            metrics("defaultProviders: {metrics: [prometheus]}"),
            Some(true)
        );
        assert_eq!(metrics("defaultProviders: {metrics: []}"), Some(false));
        assert_eq!(
            metrics("defaultProviders: {metrics: [stackdriver]}"),
            Some(false)
        );
        let mesh = parse(
            "defaultProviders: {metrics: [], accessLogging: [envoy]}
enableTracing: true
",
        );
        assert_eq!(
            mesh.unwrap().unsupported_fields(),
            ["enableTracing", "defaultProviders.accessLogging"]
        );
    }
}
