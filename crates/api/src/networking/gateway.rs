use super::Labels;
use crate::protocol::Protocol;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewaySpec {
    #[serde(default)]
    pub servers: Vec<Server>,
    /// Selects the gateway workloads (e.g. `istio: ingressgateway`).
    #[serde(default)]
    pub selector: Labels,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Server {
    pub port: GatewayPort,
    #[serde(default)]
    pub hosts: Vec<String>,
    pub tls: Option<ServerTlsSettings>,
    pub bind: Option<String>,
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayPort {
    pub number: u32,
    pub protocol: String,
    pub name: Option<String>,
    pub target_port: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerTlsSettings {
    pub https_redirect: Option<bool>,
    pub mode: Option<String>,
    pub credential_name: Option<String>,
    pub server_certificate: Option<String>,
    pub private_key: Option<String>,
    pub ca_certificates: Option<String>,
}

impl GatewayPort {
    /// The port's protocol; `None` for one Istio does not know (validation refuses it).
    pub fn protocol(&self) -> Option<Protocol> {
        Protocol::parse(&self.protocol)
    }
}

/// How a Gateway server handles TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerTlsMode {
    /// Forwards the encrypted connection, chosen by SNI.
    Passthrough,
    /// Terminates TLS with the server's certificate.
    Simple,
    /// Terminates TLS and requires a client certificate.
    Mutual,
    AutoPassthrough,
    IstioMutual,
    OptionalMutual,
}

impl ServerTlsMode {
    const NAMES: [(&str, ServerTlsMode); 6] = [
        ("PASSTHROUGH", ServerTlsMode::Passthrough),
        ("SIMPLE", ServerTlsMode::Simple),
        ("MUTUAL", ServerTlsMode::Mutual),
        ("AUTO_PASSTHROUGH", ServerTlsMode::AutoPassthrough),
        ("ISTIO_MUTUAL", ServerTlsMode::IstioMutual),
        ("OPTIONAL_MUTUAL", ServerTlsMode::OptionalMutual),
    ];

    pub fn parse(text: &str) -> Option<ServerTlsMode> {
        Self::NAMES
            .iter()
            .find(|(name, _)| *name == text)
            .map(|(_, mode)| *mode)
    }

    /// As Istio's API spells it.
    pub fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, mode)| *mode == self)
            .map_or("?", |(name, _)| name)
    }
}

impl ServerTlsSettings {
    /// The mode, SIMPLE when unset; `None` for one Istio does not know (validation
    /// refuses it).
    pub fn tls_mode(&self) -> Option<ServerTlsMode> {
        match &self.mode {
            None => Some(ServerTlsMode::Simple),
            Some(text) => ServerTlsMode::parse(text),
        }
    }
}
