//! Gateway TLS credentials: the certificate, key and client CA a Gateway server names by
//! `credentialName`, read from the cluster's Secrets and served to the gateway over SDS.

use std::fmt;

/// One Secret's TLS material (PEM). Any part may be missing: a `<name>-cacert` Secret
/// carries only the CA.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Credential {
    /// The certificate and its chain.
    pub certificate_chain: Option<String>,
    /// A secret: never logged (the `Debug` form leaves it out).
    pub private_key: Option<String>,
    /// The CA client certificates must chain to (Gateway `MUTUAL`).
    pub ca_certificates: Option<String>,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("certificate_chain", &self.certificate_chain.is_some())
            .field(
                "private_key",
                &self.private_key.as_ref().map(|_| "<redacted>"),
            )
            .field("ca_certificates", &self.ca_certificates.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_key() {
        let credential = Credential {
            certificate_chain: Some("CERT".into()),
            private_key: Some("-----BEGIN PRIVATE KEY----- secret".into()),
            ca_certificates: None,
        };
        let shown = format!("{credential:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }
}
