//! Istio's Sidecar.

use super::WorkloadSelector;
use serde::{Deserialize, Serialize};

/// Scopes what a namespace's (or selected workloads') proxies see and how they listen.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SidecarSpec {
    /// The workloads of the namespace it applies to (none: all the namespace's workloads without a
    /// Sidecar of their own).
    pub workload_selector: Option<WorkloadSelector>,
    /// How the proxy accepts inbound traffic, per port.
    #[serde(default)]
    pub ingress: Vec<IstioIngressListener>,
    /// What the proxy can reach outbound: hosts by namespace, optionally per port.
    #[serde(default)]
    pub egress: Vec<IstioEgressListener>,
    /// What happens to captured traffic to unknown hosts, instead of the mesh-wide setting.
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
}

/// A port of a Sidecar listener.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SidecarPort {
    /// The port number.
    pub number: u32,
    /// `HTTP`, `HTTPS`, `GRPC`, `HTTP2`, `MONGO`, `TCP` or `TLS`.
    pub protocol: Option<String>,
    /// The port's name.
    pub name: Option<String>,
    /// Deprecated by Istio: the port the proxy really listens on.
    pub target_port: Option<u32>,
}

/// An inbound port of the proxy and where it sends what it accepts.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IstioIngressListener {
    /// The port the proxy accepts traffic on.
    pub port: SidecarPort,
    /// The address the proxy listens on for it.
    pub bind: Option<String>,
    /// `DEFAULT`, `IPTABLES` (captured) or `NONE` (the app connects to the proxy itself).
    pub capture_mode: Option<String>,
    /// Where the app listens: `127.0.0.1:PORT`, `0.0.0.0:PORT` or `unix://...`.
    pub default_endpoint: Option<String>,
}

/// Hosts the proxy can reach, on one port or on all.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IstioEgressListener {
    /// The port (all ports when unset).
    pub port: Option<SidecarPort>,
    /// The address the proxy listens on for it.
    pub bind: Option<String>,
    /// `DEFAULT`, `IPTABLES` (captured) or `NONE` (the app connects to the proxy itself).
    pub capture_mode: Option<String>,
    /// `namespace/dnsName` entries: `./*`, `istio-system/*`, `*/reviews.default.svc.cluster.local`.
    #[serde(default)]
    pub hosts: Vec<String>,
}

/// A Sidecar's `outboundTrafficPolicy`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutboundTrafficPolicy {
    /// `ALLOW_ANY` (passed through) or `REGISTRY_ONLY` (refused).
    pub mode: Option<String>,
}
