//! The agent's connection to meshd, which serves both xDS and the CA on one port; the
//! agent is the only process of the workload that talks to meshd, and the only one that
//! holds its credential (see [`crate::xds_proxy`]).

use crate::token::TokenFile;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// Where meshd is and how the agent proves itself to it.
#[derive(Clone)]
pub struct MeshdConnection {
    /// `host:port`: an IP address or a DNS name (a hosted meshd behind a name).
    pub address: String,
    /// The roots that verify meshd's certificate (PEM): TLS, checking that the
    /// certificate names `address`'s host. `None`: plaintext, for a meshd on this host.
    pub roots: Option<String>,
    /// The workload's token, read again for every CSR and every xDS stream, so a
    /// projected token the kubelet rotates is never used stale.
    pub token: TokenFile,
    /// The cluster the workload runs in (its `CLUSTER_ID`), sent with every CSR and xDS
    /// stream: a hosted meshd reviews the token with that cluster's API server.
    pub cluster: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("meshd's address {address:?} is not host:port")]
    Address { address: String },
    #[error("meshd's address {address:?}: {source}")]
    Endpoint {
        address: String,
        source: tonic::transport::Error,
    },
    #[error("reading meshd's roots {path}: {source}")]
    Roots {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl MeshdConnection {
    /// `roots`: a PEM file of the roots that verify meshd (read once: it is the mesh's
    /// trust bundle, and meshd keeps serving a chain to it through a root rotation).
    pub fn new(
        address: &str,
        roots: Option<&Path>,
        token: TokenFile,
    ) -> Result<MeshdConnection, ConnectionError> {
        host(address).ok_or_else(|| ConnectionError::Address {
            address: address.to_string(),
        })?;
        let roots =
            match roots {
                Some(path) => Some(std::fs::read_to_string(path).map_err(|source| {
                    ConnectionError::Roots {
                        path: path.to_path_buf(),
                        source,
                    }
                })?),
                None => None,
            };
        Ok(MeshdConnection {
            address: address.to_string(),
            roots,
            token,
            cluster: None,
        })
    }

    /// The same connection, naming the workload's cluster to meshd.
    pub fn in_cluster(mut self, cluster: &str) -> MeshdConnection {
        self.cluster = Some(cluster.to_string()).filter(|c| !c.is_empty());
        self
    }

    /// A channel to meshd that connects when first used and reconnects by itself.
    pub fn channel(&self) -> Result<Channel, ConnectionError> {
        let bad = |source| ConnectionError::Endpoint {
            address: self.address.clone(),
            source,
        };
        let scheme = if self.roots.is_some() {
            "https"
        } else {
            "http"
        };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{}", self.address))
            .map_err(bad)?
            .connect_timeout(Duration::from_secs(5))
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10));
        if let Some(roots) = &self.roots {
            let host = host(&self.address).unwrap_or_default();
            let tls = ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(roots))
                .domain_name(host);
            endpoint = endpoint.tls_config(tls).map_err(bad)?;
        }
        Ok(endpoint.connect_lazy())
    }
}

/// The host of `host:port` (`[v6]:port` too), without brackets.
fn host(address: &str) -> Option<&str> {
    let (host, port) = address.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty()).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::host;

    #[test]
    fn the_host_of_an_address() {
        assert_eq!(host("10.0.0.1:15012"), Some("10.0.0.1"));
        assert_eq!(
            host("meshd.fleet.example:15012"),
            Some("meshd.fleet.example")
        );
        assert_eq!(host("[::1]:15012"), Some("::1"));
        assert_eq!(host("meshd"), None);
        assert_eq!(host("meshd:http"), None);
        assert_eq!(host(":15012"), None);
    }
}
