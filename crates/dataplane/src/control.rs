//! `DataPlaneControl` (`mesh.cloud.google.com/v1alpha1`, cluster-scoped, one per
//! revision), generated from these types. `status.state` stays unset until the
//! controller has reconciled the revision once, so the seed's readiness check
//! (`kubectl get dataplanecontrols -o custom-columns=REV:.spec.revision,STATUS:.status.state
//! | grep rapid | grep -v none`) reads `<none>` until then.

use kube::CustomResource;
use kube::core::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What a revision's managed data plane should run.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "mesh.cloud.google.com",
    version = "v1alpha1",
    kind = "DataPlaneControl",
    plural = "dataplanecontrols",
    status = "DataPlaneControlStatus",
    printcolumn = r#"{"name":"Revision","type":"string","jsonPath":".spec.revision"}"#,
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".status.state"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct DataPlaneControlSpec {
    /// The revision this controls, e.g. `asm-managed-rapid`.
    pub revision: String,
    /// The proxy version managed pods should run (default: the channel table's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_version: Option<String>,
    /// The share of managed proxies that should run it, in basis points (0–10000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_target_basis_points: Option<u32>,
}

/// What the controller last found for the revision.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataPlaneControlStatus {
    /// Unset until the revision was reconciled once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<State>,
    /// Why the rollout is stuck, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_details: Option<ErrorDetails>,
    /// The share achieved, in basis points.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_target_basis_points: Option<u32>,
    /// The `metadata.generation` this status is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Counts of the revision's pods and namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_metrics: Option<ProxyMetrics>,
}

/// Where the revision's rollout stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum State {
    /// Managed pods are being moved to the target version.
    Reconciling,
    /// Every managed pod (or the target share) runs the target version.
    Ready,
    /// The rollout cannot go on (see `errorDetails`).
    Error,
}

/// Why a rollout cannot go on.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct ErrorDetails {
    /// A stable code (e.g. `PDB_BLOCKED`).
    pub code: String,
    /// What a person should know.
    pub message: String,
}

/// Counts of a revision's injected pods and opted-in namespaces.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProxyMetrics {
    /// Injected pods of this revision that are managed.
    pub managed: u32,
    /// Injected pods of this revision that are not.
    pub unmanaged: u32,
    /// Namespaces that opted in.
    pub namespaces_enabled: u32,
    /// Pods that opted in themselves.
    pub pods_enabled: u32,
}

/// The CRD as a YAML document (JSON is YAML), for install to apply.
pub fn crd_yaml() -> String {
    serde_json::to_string_pretty(&DataPlaneControl::crd()).expect("the CRD serializes") + "\n"
}

/// A DataPlaneControl for `revision`, as install applies it: no proxy version (meshd
/// sets its channel table's, and moves it forward when it is upgraded; install owning
/// the field would move it back on every re-run) and no status (not reconciled yet).
pub fn for_revision(revision: &fleetmesh_inject::Revision) -> DataPlaneControl {
    DataPlaneControl::new(
        revision.name,
        DataPlaneControlSpec {
            revision: revision.name.into(),
            proxy_version: None,
            proxy_target_basis_points: Some(10_000),
        },
    )
}
