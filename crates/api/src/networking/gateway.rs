//! Istio's Gateway.

use super::Labels;
use crate::protocol::Protocol;
use serde::{Deserialize, Serialize};

/// Istio's Gateway: the ports, hosts and TLS a gateway's proxies serve at the edge of the mesh.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewaySpec {
    /// What the selected gateway proxies listen for.
    #[serde(default)]
    pub servers: Vec<Server>,
    /// Selects the gateway workloads (e.g. `istio: ingressgateway`).
    #[serde(default)]
    pub selector: Labels,
}

/// One listening port of a gateway, the hosts it serves there and its TLS.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Server {
    /// The port the proxy listens on.
    pub port: GatewayPort,
    /// The hosts served, each `namespace/host` or `host` (`*`: any namespace, `*.example.com`
    /// wildcards).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// TLS for this server (HTTPS and TLS ports).
    pub tls: Option<ServerTlsSettings>,
    /// The address to listen on (default: every address).
    pub bind: Option<String>,
    /// A name for the server, shown in the proxy's stats.
    pub name: Option<String>,
}

/// A gateway server's port.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayPort {
    /// The port number.
    pub number: u32,
    /// `HTTP`, `HTTPS`, `GRPC`, `HTTP2`, `MONGO`, `TCP` or `TLS`.
    pub protocol: String,
    /// The port's name.
    pub name: Option<String>,
    /// Deprecated by Istio: the port the proxy really listens on when it differs.
    pub target_port: Option<u32>,
}

/// How a gateway server handles TLS.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerTlsSettings {
    /// Answer plain HTTP with a redirect to HTTPS.
    pub https_redirect: Option<bool>,
    /// `PASSTHROUGH`, `SIMPLE`, `MUTUAL`, `AUTO_PASSTHROUGH`, `ISTIO_MUTUAL` or `OPTIONAL_MUTUAL`.
    pub mode: Option<String>,
    /// The Secret (in the gateway's namespace) holding the certificate, its key and, for MUTUAL,
    /// the client CA.
    pub credential_name: Option<String>,
    /// The certificate's file on the gateway's host, served by its agent.
    pub server_certificate: Option<String>,
    /// The certificate key's file on the gateway's host, served by its agent.
    pub private_key: Option<String>,
    /// The file of CA certificates that check client certificates (MUTUAL).
    pub ca_certificates: Option<String>,
    /// MUTUAL: a file of certificate revocation lists (PEM): a client certificate revoked
    /// there is refused. Read by the gateway's agent, like `caCertificates`.
    pub ca_crl: Option<String>,
    /// The oldest TLS version accepted.
    pub min_protocol_version: Option<TlsVersion>,
    /// The newest TLS version accepted.
    pub max_protocol_version: Option<TlsVersion>,
    /// OpenSSL names of the cipher suites offered (TLS 1.2 and below), or `[A|B]`
    /// groups of equal preference.
    #[serde(default)]
    pub cipher_suites: Vec<String>,
    /// MUTUAL: a client certificate must carry one of these names (URI or DNS).
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
    /// MUTUAL: a client certificate's SHA-256 must be one of these (hex).
    #[serde(default)]
    pub verify_certificate_hash: Vec<String>,
    /// MUTUAL: a client certificate's public key's SHA-256 must be one of these (base64).
    #[serde(default)]
    pub verify_certificate_spki: Vec<String>,
}

/// A TLS protocol version bound of a Gateway server (`TLS_AUTO`: Envoy's default).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
#[expect(
    missing_docs,
    reason = "described in the enum's doc: per-variant docs make the CRD schema one the API server refuses"
)]
pub enum TlsVersion {
    #[serde(rename = "TLS_AUTO")]
    Auto,
    #[serde(rename = "TLSV1_0")]
    V1_0,
    #[serde(rename = "TLSV1_1")]
    V1_1,
    #[serde(rename = "TLSV1_2")]
    V1_2,
    #[serde(rename = "TLSV1_3")]
    V1_3,
}

/// The cipher suites Envoy's TLS library (BoringSSL) knows, by their OpenSSL names, as
/// Istio lists them (`pkg/config/security`); each was checked against Envoy 1.40.
pub const CIPHER_SUITES: &[&str] = &[
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-RSA-AES128-SHA",
    "ECDHE-ECDSA-AES256-SHA",
    "ECDHE-RSA-AES256-SHA",
    "AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-SHA",
    "AES256-SHA",
    "DES-CBC3-SHA",
];

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
    /// Istio's multi-network passthrough by SNI (not supported yet).
    AutoPassthrough,
    /// Istio's: terminates TLS with the mesh certificate (not supported yet).
    IstioMutual,
    /// Istio's: client certificate checked when given (not supported yet).
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

    /// The mode as Istio's YAML spells it, or `None` for a name Istio does not have.
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
