//! What made the mesh's state change. Every watch, file and fetch that can change what
//! proxies are sent says what it saw; the push counts it under istiod's metrics
//! (`pilot_k8s_reg_events`, `pilot_k8s_cfg_events`, `pilot_push_triggers`), so a
//! dashboard shows why meshd pushed.

/// What happened to a watched object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Event {
    /// It appeared (also when first listed).
    Add,
    /// It changed (or was listed again after a broken watch).
    Update,
    /// It was deleted.
    Delete,
}

impl Event {
    /// istiod's `event` label.
    pub fn name(self) -> &'static str {
        match self {
            Event::Add => "add",
            Event::Update => "update",
            Event::Delete => "delete",
        }
    }
}

/// Where a change came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Origin {
    /// Kubernetes Services.
    Services,
    /// What gives services their endpoints: EndpointSlices and Pods, by istiod's
    /// registry type name (`EndpointSlice`, `Pods`).
    Endpoints(&'static str),
    /// An Istio config object, by kind (`VirtualService`).
    Config(&'static str),
    /// A Secret holding TLS credentials.
    Secret,
    /// Mesh-wide settings: MeshConfig, the install's settings.
    Global,
    /// A remote cluster joined, changed or left (its remote secret).
    RemoteCluster,
    /// The config directory.
    Files,
    /// A JWKS document meshd fetched.
    Jwks,
}

impl Origin {
    /// istiod's `pilot_push_triggers{type}` for a push this change caused.
    pub fn push_reason(self) -> &'static str {
        match self {
            Origin::Services => "service",
            Origin::Endpoints(_) => "endpoint",
            Origin::Config(_) | Origin::Files | Origin::Jwks => "config",
            Origin::Secret => "secret",
            Origin::Global => "global",
            Origin::RemoteCluster => "cluster_update",
        }
    }
}

/// One change: where it came from and what happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Trigger {
    /// Where.
    pub origin: Origin,
    /// What.
    pub event: Event,
}

impl Trigger {
    /// A change of `origin` of which only "it changed" is known (a file, a fetch).
    pub fn update(origin: Origin) -> Trigger {
        Trigger {
            origin,
            event: Event::Update,
        }
    }
}
