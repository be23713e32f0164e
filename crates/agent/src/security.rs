//! The agent's security side, started before Envoy: the workload certificate kept fresh
//! ([`crate::certificate`]) and served to Envoy over SDS ([`crate::sds`]), and Envoy's
//! xDS streams carried to meshd with the workload's credential ([`crate::xds_proxy`]).
//! Both on Unix sockets in the workload's directory that only its user can open.

use crate::certificate::{self, CertificateOptions, Certificates, WorkloadCertificate};
use crate::meshd::{ConnectionError, MeshdConnection};
use crate::sds::SdsServer;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::task::JoinHandle;

pub struct Security {
    sds_socket: PathBuf,
    xds_socket: PathBuf,
    certificates: Certificates,
    tasks: Vec<JoinHandle<()>>,
}

#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error(transparent)]
    Meshd(#[from] ConnectionError),
    #[error("cannot serve Envoy on {path}: {source}")]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Security {
    /// Serves SDS and xDS to Envoy on sockets in `dir` and gets the certificate in the
    /// background (Envoy waits for it); stops when dropped. Call within a Tokio runtime.
    pub fn start(
        meshd: &MeshdConnection,
        spiffe_id: String,
        ttl: std::time::Duration,
        dir: &Path,
    ) -> Result<Security, SecurityError> {
        let channel = meshd.channel()?;
        let options = CertificateOptions {
            cluster: meshd.cluster.clone(),
            token: meshd.token.clone(),
            spiffe_id,
            ttl,
        };
        let (certificates, renewal) = certificate::keep_fresh(channel.clone(), options);
        let socket_error = |path: &Path| {
            let path = path.to_path_buf();
            move |source| SecurityError::Socket { path, source }
        };
        let sds_socket = dir.join("sds.sock");
        let sds = SdsServer::new(certificates.clone())
            .serve(&sds_socket)
            .map_err(socket_error(&sds_socket))?;
        let xds_socket = dir.join("xds.sock");
        let xds = crate::xds_proxy::serve(&xds_socket, channel, meshd)
            .map_err(socket_error(&xds_socket))?;
        Ok(Security {
            sds_socket,
            xds_socket,
            certificates,
            tasks: vec![renewal, sds, xds],
        })
    }

    /// Where Envoy gets its certificate (SDS).
    pub fn sds_socket(&self) -> &Path {
        &self.sds_socket
    }

    /// Where Envoy reaches meshd (ADS, forwarded by the agent).
    pub fn xds_socket(&self) -> &Path {
        &self.xds_socket
    }

    /// The certificate Envoy is being served now, once there is one.
    pub fn current(&self) -> Option<Arc<WorkloadCertificate>> {
        self.certificates.borrow().clone()
    }
}

impl Drop for Security {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        let _ = std::fs::remove_file(&self.sds_socket);
        let _ = std::fs::remove_file(&self.xds_socket);
    }
}
