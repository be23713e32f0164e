//! Sidecar and gateway injection, as Istio's injector does it: the API server sends a
//! Pod CREATE review ([`review`]); [`policy`] decides whether and with which template;
//! [`template`] renders the pod with the `istio-proxy` container (and [`probes`] points
//! the app's probes at the agent); the answer is a JSONPatch. [`channel`] holds the
//! release channels and the revisions they pin. The same templates serve
//! `fleetmesh kube-inject`, offline.

#![warn(missing_docs)]

pub mod admission;
pub mod channel;
pub mod policy;
pub mod probes;
pub mod review;
pub mod template;
pub mod versions;
pub mod webhook_path;

pub use channel::{Channel, DEFAULT_HUB, Revision};
pub use policy::{Decision, Template};
pub use template::{InjectedBy, Settings};

/// Annotations the injector reads or writes (Istio's names where Istio has one).
pub mod annotations {
    /// Set on injected pods: what was added, and by which revision. Its presence makes
    /// injection idempotent.
    pub const STATUS: &str = "sidecar.istio.io/status";
    /// `"false"` opts a pod out (the older form of the label of the same name).
    pub const INJECT: &str = "sidecar.istio.io/inject";
    /// `gateway` picks the gateway template.
    pub const TEMPLATES: &str = "inject.istio.io/templates";
    /// `"true"` runs `istio-proxy` as a native sidecar (an init container that keeps running).
    pub const NATIVE_SIDECAR: &str = "sidecar.istio.io/nativeSidecar";
    /// `"false"` leaves the app's probes as they are.
    pub const REWRITE_PROBES: &str = "sidecar.istio.io/rewriteAppHTTPProbers";
    /// `webhook` or `kube-inject`: the managed data plane only replaces pods whose proxy
    /// a webhook injected (a hand-injected pod would come back with the old proxy).
    pub const INJECTED_BY: &str = "fleetmesh.io/injected-by";
    /// Which container `kubectl exec` and `logs` pick without `-c`: the app's.
    pub const DEFAULT_CONTAINER: &str = "kubectl.kubernetes.io/default-container";
    /// Whether Prometheus scrapes the pod (the convention of Prometheus' Kubernetes
    /// examples, which Istio follows).
    pub const PROMETHEUS_SCRAPE: &str = "prometheus.io/scrape";
    /// The port Prometheus scrapes: the agent's status port.
    pub const PROMETHEUS_PORT: &str = "prometheus.io/port";
    /// The path Prometheus scrapes: `/stats/prometheus`.
    pub const PROMETHEUS_PATH: &str = "prometheus.io/path";
    /// `"false"`: the app's own `prometheus.io/*` annotations stay as they are, and its
    /// metrics are not served with the proxy's (Istio's per-pod opt-out of merging).
    pub const MERGE_METRICS: &str = "prometheus.istio.io/merge-metrics";
}

/// Labels the injector reads or writes.
pub mod labels {
    /// On a namespace (or a pod in an unlabelled namespace): the revision that injects it.
    pub const REVISION: &str = "istio.io/rev";
    /// The legacy namespace label; `enabled` follows the `default` revision tag.
    pub const INJECTION: &str = "istio-injection";
    /// `"false"` opts a pod out; takes precedence over the annotation.
    pub const INJECT: &str = "sidecar.istio.io/inject";
    /// The proxy version an injected pod runs.
    pub const PROXY_VERSION: &str = "fleetmesh.io/proxy-version";
    /// `istio`: the pod has a sidecar, so its peers send it mTLS.
    pub const TLS_MODE: &str = "security.istio.io/tlsMode";
    /// The workload's service name, for telemetry.
    pub const CANONICAL_NAME: &str = "service.istio.io/canonical-name";
    /// The workload's version, for telemetry.
    pub const CANONICAL_REVISION: &str = "service.istio.io/canonical-revision";
}

/// The sidecar's container and init container names.
pub const PROXY_CONTAINER: &str = "istio-proxy";
/// The init container that programs the pod's traffic capture.
pub const INIT_CONTAINER: &str = "istio-init";
