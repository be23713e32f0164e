//! The protocol of a port, as Istio names it on Services, ServiceEntries, Sidecars and
//! Gateway servers.

/// Protocol of a port, from its explicit protocol, `appProtocol`, or Istio's
/// name-prefix convention (`http-web`, `grpc`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Protocol {
    /// HTTP/1.1 (or HTTP/2 when the client speaks it).
    Http,
    /// HTTP/2 in the clear (h2c).
    Http2,
    /// gRPC, over HTTP/2.
    Grpc,
    /// HTTP over TLS.
    Https,
    /// TLS, forwarded by its SNI name without being terminated.
    Tls,
    /// Opaque bytes (MONGO, MYSQL and REDIS too).
    Tcp,
}

impl Protocol {
    /// A protocol as Istio names it, in any case (`HTTP`, `grpc-web`, `MONGO`, ...).
    pub fn parse(text: &str) -> Option<Protocol> {
        match text.to_ascii_lowercase().as_str() {
            "http" => Some(Protocol::Http),
            "http2" | "h2c" => Some(Protocol::Http2),
            "grpc" | "grpc-web" => Some(Protocol::Grpc),
            "https" => Some(Protocol::Https),
            "tls" => Some(Protocol::Tls),
            "tcp" | "mongo" | "redis" | "mysql" => Some(Protocol::Tcp),
            _ => None,
        }
    }

    /// A port's protocol: the explicit one, else the name's prefix (`http-web`), else HTTP.
    pub fn detect(explicit: Option<&str>, port_name: &str) -> Protocol {
        explicit
            .and_then(Protocol::parse)
            .or_else(|| Protocol::parse(port_name.split('-').next().unwrap_or("")))
            // Istio sniffs unnamed ports; without sniffing, HTTP is the useful default.
            .unwrap_or(Protocol::Http)
    }

    /// Carried over HTTP in the clear (or h2c): what an HTTP connection manager serves.
    pub fn is_http(self) -> bool {
        matches!(self, Protocol::Http | Protocol::Http2 | Protocol::Grpc)
    }

    /// TLS, terminated or passed through.
    pub fn is_tls(self) -> bool {
        matches!(self, Protocol::Https | Protocol::Tls)
    }
}
