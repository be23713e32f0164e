use crate::kube::{Endpoints, ServiceSpec};
use crate::meta::ObjectMeta;
use crate::networking::*;
use crate::security::*;
use serde::{Deserialize, Serialize};

/// The kinds fleetmesh reads, and the apiVersions each accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Service,
    Endpoints,
    VirtualService,
    DestinationRule,
    Gateway,
    ServiceEntry,
    WorkloadEntry,
    Sidecar,
    PeerAuthentication,
    AuthorizationPolicy,
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
    #[error(
        "kind {0:?} is not supported (supported: Service, Endpoints, VirtualService, DestinationRule, Gateway, ServiceEntry, WorkloadEntry, Sidecar, PeerAuthentication, AuthorizationPolicy, RequestAuthentication)"
    )]
    Kind(String),
    #[error("apiVersion {api_version:?} is not valid for {kind:?} (use one of {accepted:?})")]
    ApiVersion {
        kind: Kind,
        api_version: String,
        accepted: &'static [&'static str],
    },
}

impl Kind {
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
    Service(Config<ServiceSpec>),
    Endpoints(Endpoints),
    VirtualService(Config<VirtualServiceSpec>),
    DestinationRule(Config<DestinationRuleSpec>),
    Gateway(Config<GatewaySpec>),
    ServiceEntry(Config<ServiceEntrySpec>),
    WorkloadEntry(Config<WorkloadEntrySpec>),
    Sidecar(Config<SidecarSpec>),
    PeerAuthentication(Config<PeerAuthenticationSpec>),
    AuthorizationPolicy(Config<AuthorizationPolicySpec>),
    RequestAuthentication(Config<RequestAuthenticationSpec>),
}

/// One config object as written: `apiVersion`, `kind`, `metadata`, `spec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config<S> {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: S,
    /// Written back by controllers; ignored on input.
    #[serde(default, skip_serializing)]
    pub status: Option<serde_yaml_ng::Value>,
}

impl Resource {
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
        format!("{:?} {}", self.kind(), self.meta().key())
    }
}
