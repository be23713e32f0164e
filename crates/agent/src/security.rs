//! The agent's security side, started before Envoy: the workload certificate kept fresh
//! ([`crate::certificate`]) and served to Envoy over SDS on a Unix socket ([`crate::sds`]).

use crate::certificate::{
    self, CertificateError, CertificateOptions, Certificates, WorkloadCertificate,
};
use crate::sds::SdsServer;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::task::JoinHandle;

pub struct Security {
    socket: PathBuf,
    certificates: Certificates,
    tasks: Vec<JoinHandle<()>>,
}

#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error(transparent)]
    Certificate(#[from] CertificateError),
    #[error("cannot serve SDS on {path}: {source}")]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Security {
    /// Serves SDS on `socket` and gets the certificate in the background (Envoy waits for
    /// it); stops when dropped. Call within a Tokio runtime.
    pub fn start(options: CertificateOptions, socket: &Path) -> Result<Security, SecurityError> {
        let (certificates, renewal) = certificate::keep_fresh(options)?;
        let sds = SdsServer::new(certificates.clone())
            .serve(socket)
            .map_err(|source| SecurityError::Socket {
                path: socket.to_path_buf(),
                source,
            })?;
        Ok(Security {
            socket: socket.to_path_buf(),
            certificates,
            tasks: vec![renewal, sds],
        })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
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
        let _ = std::fs::remove_file(&self.socket);
    }
}
