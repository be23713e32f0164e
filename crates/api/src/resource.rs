//! The kinds fleetmesh reads, and a resource of any of them.

use crate::kube::{Endpoints, ServiceSpec};
use crate::meta::ObjectMeta;
use crate::networking::*;
use crate::security::*;
use serde::{Deserialize, Serialize};

/// The kinds fleetmesh reads, and the apiVersions each accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Kubernetes `Service`.
    Service,
    /// Kubernetes `Endpoints` (local mode).
    Endpoints,
    /// Istio's `VirtualService`.
    VirtualService,
    /// Istio's `DestinationRule`.
    DestinationRule,
    /// Istio's `Gateway`.
    Gateway,
    /// Istio's `ServiceEntry`.
    ServiceEntry,
    /// Istio's `WorkloadEntry`.
    WorkloadEntry,
    /// Istio's `Sidecar`.
    Sidecar,
    /// Istio's `PeerAuthentication`.
    PeerAuthentication,
    /// Istio's `AuthorizationPolicy`.
    AuthorizationPolicy,
    /// Istio's `RequestAuthentication`.
    RequestAuthentication,
}

const ISTIO_SECURITY: &[&str] = &["security.istio.io/v1", "security.istio.io/v1beta1"];

const ISTIO_NETWORKING: &[&str] = &[
    "networking.istio.io/v1",
    "networking.istio.io/v1beta1",
    "networking.istio.io/v1alpha3",
];

/// A document whose `apiVersion` and `kind` meshd does not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnsupportedKind {
    /// A kind meshd does not read.
    #[error(
        "kind {0:?} is not supported (supported: Service, Endpoints, VirtualService, DestinationRule, Gateway, ServiceEntry, WorkloadEntry, Sidecar, PeerAuthentication, AuthorizationPolicy, RequestAuthentication)"
    )]
    Kind(String),
    /// A kind meshd reads, under an apiVersion it does not accept.
    #[error("apiVersion {api_version:?} is not valid for {kind:?} (use one of {accepted:?})")]
    ApiVersion {
        /// The kind.
        kind: Kind,
        /// The apiVersion given.
        api_version: String,
        /// The apiVersions accepted for the kind.
        accepted: &'static [&'static str],
    },
}

impl Kind {
    /// `Kind namespace/name`: how errors and findings name the object of this kind whose
    /// metadata is `meta`.
    pub fn describe(self, meta: &ObjectMeta) -> String {
        format!("{self:?} {}", meta.key())
    }

    /// The kind a document's `apiVersion` and `kind` name, or why meshd does not read it.
    pub fn from_type(api_version: &str, kind: &str) -> Result<Kind, UnsupportedKind> {
        let kind = match kind {
            "Service" => Kind::Service,
            "Endpoints" => Kind::Endpoints,
            "VirtualService" => Kind::VirtualService,
            "DestinationRule" => Kind::DestinationRule,
            "Gateway" => Kind::Gateway,
            "ServiceEntry" => Kind::ServiceEntry,
            "WorkloadEntry" => Kind::WorkloadEntry,
            "Sidecar" => Kind::Sidecar,
            "PeerAuthentication" => Kind::PeerAuthentication,
            "AuthorizationPolicy" => Kind::AuthorizationPolicy,
            "RequestAuthentication" => Kind::RequestAuthentication,
            other => return Err(UnsupportedKind::Kind(other.to_string())),
        };
        let accepted: &'static [&'static str] = match kind {
            Kind::Service | Kind::Endpoints => &["v1"],
            Kind::PeerAuthentication | Kind::AuthorizationPolicy | Kind::RequestAuthentication => {
                ISTIO_SECURITY
            }
            _ => ISTIO_NETWORKING,
        };
        if accepted.contains(&api_version) {
            Ok(kind)
        } else {
            Err(UnsupportedKind::ApiVersion {
                kind,
                api_version: api_version.to_string(),
                accepted,
            })
        }
    }
}

/// A typed resource: metadata plus the spec of its kind.
// Resources are parsed once per file change and held in one list per file; the padding
// of the smaller variants costs nothing worth an extra allocation per resource.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Resource {
    /// A Kubernetes Service.
    Service(Config<ServiceSpec>),
    /// Kubernetes Endpoints.
    Endpoints(Endpoints),
    /// An Istio VirtualService.
    VirtualService(Config<VirtualServiceSpec>),
    /// An Istio DestinationRule.
    DestinationRule(Config<DestinationRuleSpec>),
    /// An Istio Gateway.
    Gateway(Config<GatewaySpec>),
    /// An Istio ServiceEntry.
    ServiceEntry(Config<ServiceEntrySpec>),
    /// An Istio WorkloadEntry.
    WorkloadEntry(Config<WorkloadEntrySpec>),
    /// An Istio Sidecar.
    Sidecar(Config<SidecarSpec>),
    /// An Istio PeerAuthentication.
    PeerAuthentication(Config<PeerAuthenticationSpec>),
    /// An Istio AuthorizationPolicy.
    AuthorizationPolicy(Config<AuthorizationPolicySpec>),
    /// An Istio RequestAuthentication.
    RequestAuthentication(Config<RequestAuthenticationSpec>),
}

/// One config object as written: `apiVersion`, `kind`, `metadata`, `spec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config<S> {
    /// The API group and version, e.g. `networking.istio.io/v1`.
    pub api_version: String,
    /// The kind, e.g. `VirtualService`.
    pub kind: String,
    /// Name, namespace, labels and annotations.
    pub metadata: ObjectMeta,
    /// The kind's settings.
    pub spec: S,
    /// Written back by controllers; ignored on input.
    #[serde(default, skip_serializing)]
    pub status: Option<serde_yaml_ng::Value>,
}

impl Resource {
    /// The object's metadata.
    pub fn meta(&self) -> &ObjectMeta {
        match self {
            Resource::Service(c) => &c.metadata,
            Resource::Endpoints(e) => &e.metadata,
            Resource::VirtualService(c) => &c.metadata,
            Resource::DestinationRule(c) => &c.metadata,
            Resource::Gateway(c) => &c.metadata,
            Resource::ServiceEntry(c) => &c.metadata,
            Resource::WorkloadEntry(c) => &c.metadata,
            Resource::Sidecar(c) => &c.metadata,
            Resource::PeerAuthentication(c) => &c.metadata,
            Resource::AuthorizationPolicy(c) => &c.metadata,
            Resource::RequestAuthentication(c) => &c.metadata,
        }
    }

    /// The object's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Resource::Service(_) => Kind::Service,
            Resource::Endpoints(_) => Kind::Endpoints,
            Resource::VirtualService(_) => Kind::VirtualService,
            Resource::DestinationRule(_) => Kind::DestinationRule,
            Resource::Gateway(_) => Kind::Gateway,
            Resource::ServiceEntry(_) => Kind::ServiceEntry,
            Resource::WorkloadEntry(_) => Kind::WorkloadEntry,
            Resource::Sidecar(_) => Kind::Sidecar,
            Resource::PeerAuthentication(_) => Kind::PeerAuthentication,
            Resource::AuthorizationPolicy(_) => Kind::AuthorizationPolicy,
            Resource::RequestAuthentication(_) => Kind::RequestAuthentication,
        }
    }

    /// `Kind namespace/name`, as errors name a resource.
    pub fn describe(&self) -> String {
        self.kind().describe(self.meta())
    }
}
