//! Istio's CustomResourceDefinitions (networking.istio.io and security.istio.io),
//! generated from fleetmesh's typed config structs: the same groups, versions, kinds and
//! names as Istio's, with structural schemas, so
//! Istio YAML applies unchanged. `manifests/istio-crds.yaml` holds the output; a test
//! regenerates it and fails on a difference.

use fleetmesh_api::networking::*;
use fleetmesh_api::security::{
    AuthorizationPolicySpec, PeerAuthenticationSpec, RequestAuthenticationSpec,
};
use kube::core::schema::StructuralSchemaRewriter;
use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde_json::{Value, json};

/// The API group of Istio's traffic kinds.
pub const NETWORKING: &str = "networking.istio.io";
/// The API group of Istio's security kinds.
pub const SECURITY: &str = "security.istio.io";
/// Served versions; the first is stored.
const NETWORKING_VERSIONS: &[&str] = &["v1", "v1beta1", "v1alpha3"];
const SECURITY_VERSIONS: &[&str] = &["v1", "v1beta1"];

/// One Istio kind as the API server knows it.
pub struct IstioKind {
    /// Its API group.
    pub group: &'static str,
    /// Served versions; the first is stored.
    pub versions: &'static [&'static str],
    /// Its kind, as `kind:` names it.
    pub kind: &'static str,
    /// Its resource name in URLs.
    pub plural: &'static str,
    /// What `kubectl get` also takes (`vs`, `dr`, ...).
    pub short_names: &'static [&'static str],
    spec_schema: fn() -> Value,
}

/// Every Istio kind meshd reads.
pub const KINDS: [IstioKind; 9] = [
    IstioKind {
        group: NETWORKING,
        versions: NETWORKING_VERSIONS,
        kind: "VirtualService",
        plural: "virtualservices",
        short_names: &["vs"],
        spec_schema: schema::<VirtualServiceSpec>,
    },
    IstioKind {
        group: NETWORKING,
        versions: NETWORKING_VERSIONS,
        kind: "DestinationRule",
        plural: "destinationrules",
        short_names: &["dr"],
        spec_schema: schema::<DestinationRuleSpec>,
    },
    IstioKind {
        group: NETWORKING,
        versions: NETWORKING_VERSIONS,
        kind: "Gateway",
        plural: "gateways",
        short_names: &["gw"],
        spec_schema: schema::<GatewaySpec>,
    },
    IstioKind {
        group: NETWORKING,
        versions: NETWORKING_VERSIONS,
        kind: "ServiceEntry",
        plural: "serviceentries",
        short_names: &["se"],
        spec_schema: schema::<ServiceEntrySpec>,
    },
    IstioKind {
        group: NETWORKING,
        versions: NETWORKING_VERSIONS,
        kind: "WorkloadEntry",
        plural: "workloadentries",
        short_names: &["we"],
        spec_schema: schema::<WorkloadEntrySpec>,
    },
    IstioKind {
        group: NETWORKING,
        versions: NETWORKING_VERSIONS,
        kind: "Sidecar",
        plural: "sidecars",
        short_names: &[],
        spec_schema: schema::<SidecarSpec>,
    },
    IstioKind {
        group: SECURITY,
        versions: SECURITY_VERSIONS,
        kind: "PeerAuthentication",
        plural: "peerauthentications",
        short_names: &["pa"],
        spec_schema: schema::<PeerAuthenticationSpec>,
    },
    IstioKind {
        group: SECURITY,
        versions: SECURITY_VERSIONS,
        kind: "AuthorizationPolicy",
        plural: "authorizationpolicies",
        short_names: &["ap"],
        spec_schema: schema::<AuthorizationPolicySpec>,
    },
    IstioKind {
        group: SECURITY,
        versions: SECURITY_VERSIONS,
        kind: "RequestAuthentication",
        plural: "requestauthentications",
        short_names: &["ra"],
        spec_schema: schema::<RequestAuthenticationSpec>,
    },
];

/// The structural OpenAPI v3 schema of `T`, all subschemas inline.
fn schema<T: JsonSchema>() -> Value {
    let generator = SchemaSettings::openapi3()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .with_transform(StructuralSchemaRewriter)
        .into_generator();
    let mut value =
        serde_json::to_value(generator.into_root_schema_for::<T>()).expect("schemas serialize");
    if let Some(object) = value.as_object_mut() {
        object.remove("title");
    }
    value
}

impl IstioKind {
    /// An object of this kind as the API server stores it, through the same parser and
    /// validator as local files; the error describes the object and lists its problems.
    pub fn load(
        &self,
        object: &kube::api::DynamicObject,
    ) -> Result<fleetmesh_api::Resource, (String, Vec<String>)> {
        let described = || {
            let meta = &object.metadata;
            let (namespace, name) = (meta.namespace.as_deref(), meta.name.as_deref());
            format!(
                "{} {}/{}",
                self.kind,
                namespace.unwrap_or(""),
                name.unwrap_or("")
            )
        };
        let mut stored =
            serde_yaml_ng::to_value(object).map_err(|e| (described(), vec![e.to_string()]))?;
        stored["apiVersion"] = self.api_version().into();
        stored["kind"] = self.kind.into();
        fleetmesh_api::load_stored_object(&stored).map_err(|(described, problems)| {
            (described, problems.iter().map(|p| p.to_string()).collect())
        })
    }

    /// The stored version, e.g. `networking.istio.io/v1`.
    pub fn api_version(&self) -> String {
        format!("{}/{}", self.group, self.versions[0])
    }

    /// Its CustomResourceDefinition, with the schema of our type.
    pub fn crd(&self) -> Value {
        let versions: Vec<Value> = self
            .versions
            .iter()
            .enumerate()
            .map(|(i, version)| {
                json!({
                    "name": version,
                    "served": true,
                    "storage": i == 0,
                    "schema": {"openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": (self.spec_schema)(),
                            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                        },
                    }},
                    "subresources": {"status": {}},
                })
            })
            .collect();
        json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {
                "name": format!("{}.{}", self.plural, self.group),
                "labels": {"app.kubernetes.io/part-of": "fleetmesh"},
            },
            "spec": {
                "group": self.group,
                "names": {
                    "kind": self.kind,
                    "listKind": format!("{}List", self.kind),
                    "plural": self.plural,
                    "singular": self.kind.to_ascii_lowercase(),
                    "shortNames": self.short_names,
                    "categories": ["istio-io", self.group.replace('.', "-")],
                },
                "scope": "Namespaced",
                "versions": versions,
            },
        })
    }
}

/// Every CRD as one multi-document YAML file.
pub fn istio_crds_yaml() -> String {
    let mut out = String::from(
        "# Generated from fleetmesh's config types (crates/kube/src/crds.rs); do not edit.\n",
    );
    for kind in &KINDS {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&kind.crd()).expect("CRDs serialize"));
    }
    out
}
