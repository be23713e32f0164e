//! Which security policies apply to a workload, with Istio's precedence.

use crate::service::labels_match;
use crate::snapshot::Snapshot;
use fleetmesh_api::resource::Config;
use fleetmesh_api::security::{
    AuthorizationPolicySpec, MtlsMode, PeerAuthenticationSpec, RequestAuthenticationSpec,
    WorkloadSelector,
};
use std::collections::BTreeMap;
use std::sync::Arc;

/// What a workload's sidecar accepts on its inbound ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundMtls {
    /// The mode of every port without an override.
    pub default: MtlsMode,
    /// Overrides by workload port.
    pub ports: BTreeMap<u32, MtlsMode>,
}

impl InboundMtls {
    /// STRICT, PERMISSIVE or DISABLE for `port` (never UNSET).
    pub fn mode(&self, port: u32) -> MtlsMode {
        self.ports.get(&port).copied().unwrap_or(self.default)
    }
}

/// The effective PeerAuthentication of a workload: its own (selector) policy over its
/// namespace's over the mesh's (root namespace); UNSET inherits the level above, and
/// PERMISSIVE is the default at the top.
pub fn inbound_mtls(
    snapshot: &Snapshot,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> InboundMtls {
    let without_selector = |ns: &str| {
        snapshot
            .peer_authentications
            .iter()
            .find(|p| p.metadata.namespace == ns && p.spec.selector.is_none())
    };
    let workload = snapshot.peer_authentications.iter().find(|p| {
        p.metadata.namespace == namespace
            && p.spec.selector.as_ref().is_some_and(|s| {
                !s.match_labels.is_empty() && labels_match(&s.match_labels, labels)
            })
    });
    let mode_of = |p: Option<&Arc<Config<PeerAuthenticationSpec>>>| {
        p.and_then(|p| p.spec.mtls.as_ref())
            .map_or(MtlsMode::Unset, |m| m.mode)
    };
    let mut default = MtlsMode::Permissive;
    for level in [
        without_selector(&snapshot.mesh.root_namespace),
        without_selector(namespace),
        workload,
    ] {
        let mode = mode_of(level);
        if mode != MtlsMode::Unset {
            default = mode;
        }
    }
    let ports = workload
        .map(|p| {
            p.spec
                .port_level_mtls
                .iter()
                .filter(|(_, m)| m.mode != MtlsMode::Unset)
                .map(|(port, m)| (*port, m.mode))
                .collect()
        })
        .unwrap_or_default();
    InboundMtls { default, ports }
}

/// The AuthorizationPolicies that apply to a workload.
pub fn authorization_policies<'a>(
    snapshot: &'a Snapshot,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Vec<&'a Config<AuthorizationPolicySpec>> {
    applying(
        &snapshot.authorization_policies,
        |s| s.selector.as_ref(),
        snapshot,
        namespace,
        labels,
    )
}

/// The RequestAuthentications that apply to a workload.
pub fn request_authentications<'a>(
    snapshot: &'a Snapshot,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Vec<&'a Config<RequestAuthenticationSpec>> {
    applying(
        &snapshot.request_authentications,
        |s| s.selector.as_ref(),
        snapshot,
        namespace,
        labels,
    )
}

/// Policies without a selector apply to their namespace (mesh-wide in the root
/// namespace); with one, to the workloads of their namespace it selects.
fn applying<'a, S>(
    policies: &'a [Arc<Config<S>>],
    selector: fn(&S) -> Option<&WorkloadSelector>,
    snapshot: &Snapshot,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Vec<&'a Config<S>> {
    policies
        .iter()
        .filter(|p| {
            let ns = p.metadata.namespace.as_str();
            match selector(&p.spec) {
                None => ns == namespace || ns == snapshot.mesh.root_namespace,
                Some(selector) => ns == namespace && labels_match(&selector.match_labels, labels),
            }
        })
        .map(|p| p.as_ref())
        .collect()
}
