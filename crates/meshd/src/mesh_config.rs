//! Istio's MeshConfig (ConfigMap `istio`, key `mesh`) on top of meshd's own defaults.

use fleetmesh_api::mesh_config::{self, OutboundMode};
use fleetmesh_model::MeshSettings;
use parking_lot::Mutex;

pub struct MeshConfig {
    defaults: MeshSettings,
    /// The text last reported on, so each version is reported once.
    reported: Mutex<Option<String>>,
}

impl MeshConfig {
    pub fn new(defaults: MeshSettings) -> MeshConfig {
        MeshConfig {
            defaults,
            reported: Mutex::default(),
        }
    }

    /// The settings `text` gives (the defaults where it is silent or invalid).
    pub fn settings(&self, text: Option<&str>) -> MeshSettings {
        let Some(text) = text else {
            return self.defaults.clone();
        };
        let parsed = mesh_config::parse(text);
        let mut reported = self.reported.lock();
        let first_time = reported.as_deref() != Some(text);
        *reported = Some(text.to_string());
        match parsed {
            Ok(mesh) => {
                let fields = mesh.unsupported_fields();
                if first_time && !fields.is_empty() {
                    tracing::warn!(?fields, "MeshConfig fields meshd does not apply (yet)");
                }
                // Certificates carry the CA's trust domain (--trust-domain); peers are
                // checked against the same one, whatever MeshConfig says.
                if first_time
                    && let Some(asked) = &mesh.trust_domain
                    && *asked != self.defaults.trust_domain
                {
                    tracing::warn!(
                        mesh_config = %asked,
                        ca = %self.defaults.trust_domain,
                        "MeshConfig trustDomain differs from meshd's --trust-domain; workload identities keep the CA's"
                    );
                }
                let workload_metrics = mesh
                    .workload_metrics()
                    .unwrap_or(self.defaults.workload_metrics);
                MeshSettings {
                    workload_metrics,
                    root_namespace: mesh
                        .root_namespace
                        .unwrap_or_else(|| self.defaults.root_namespace.clone()),
                    trust_domain: self.defaults.trust_domain.clone(),
                    registry_only: match mesh.outbound_traffic_policy.and_then(|p| p.mode) {
                        Some(mode) => mode == OutboundMode::RegistryOnly,
                        None => self.defaults.registry_only,
                    },
                }
            }
            Err(error) => {
                if first_time {
                    tracing::error!(%error, "invalid MeshConfig (ConfigMap istio, key mesh); using the defaults");
                }
                self.defaults.clone()
            }
        }
    }
}
