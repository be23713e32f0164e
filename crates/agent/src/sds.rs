//! SDS for Envoy on a Unix socket, as Istio's agent serves it: secret `default` (the
//! workload's certificate and key) and `ROOTCA` (the trust bundle), pushed again whenever
//! the certificate is renewed; and, for TLS the proxy originates outside the mesh, files
//! of its host (`file-root:PATH`, `file-root:system`, `file-cert:CERT~KEY`).

use crate::certificate::{Certificates, WorkloadCertificate};
use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, TlsCertificate, secret,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::{
    SecretDiscoveryService, SecretDiscoveryServiceServer,
};
use envoy_types::util::pack_any;
use std::path::Path;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

pub const CERTIFICATE_SECRET: &str = "default";
pub const ROOT_SECRET: &str = "ROOTCA";
const SECRET_TYPE: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

pub struct SdsServer {
    certificates: Certificates,
}

impl SdsServer {
    pub fn new(certificates: Certificates) -> SdsServer {
        SdsServer { certificates }
    }

    /// Serves on a Unix socket at `path` (replacing a stale one) until the task is aborted.
    pub fn serve(self, path: &Path) -> std::io::Result<tokio::task::JoinHandle<()>> {
        let listener = crate::socket::bind_private(path)?;
        Ok(tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_service(SecretDiscoveryServiceServer::new(self))
                .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener))
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "SDS server failed");
            }
        }))
    }
}

/// The secret `name` made of `certificate`, if it is one the agent serves.
pub fn secret(name: &str, certificate: &WorkloadCertificate) -> Option<Secret> {
    let pem = |text: &str| inline(text.as_bytes().to_vec());
    let r#type = match name {
        CERTIFICATE_SECRET => secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: Some(pem(&certificate.chain)),
            private_key: Some(pem(&certificate.key)),
            ..TlsCertificate::default()
        }),
        ROOT_SECRET => secret::Type::ValidationContext(CertificateValidationContext {
            trusted_ca: Some(pem(&certificate.roots)),
            ..CertificateValidationContext::default()
        }),
        other => file_secret(other)?,
    };
    Some(Secret {
        name: name.into(),
        r#type: Some(r#type),
    })
}

/// Secret bytes as Envoy takes them inline.
fn inline(bytes: Vec<u8>) -> DataSource {
    DataSource {
        specifier: Some(data_source::Specifier::InlineBytes(bytes)),
        ..DataSource::default()
    }
}

const FILE_ROOT: &str = "file-root:";
const FILE_CERT: &str = "file-cert:";
/// Where distributions keep the system's CA bundle (`file-root:system`).
const SYSTEM_ROOTS: [&str; 5] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/ssl/cert.pem",
];

/// A secret read from files of this host: `file-root:PATH` (a CA bundle;
/// `file-root:system` the system's), `file-cert:CERT~KEY`. A file that cannot be read is
/// logged (by path) and the secret not served: Envoy waits for it.
fn file_secret(name: &str) -> Option<secret::Type> {
    let read = |path: &str| match std::fs::read(path) {
        Ok(bytes) => Some(inline(bytes)),
        Err(error) => {
            tracing::warn!(path, %error, "cannot read a file named by a DestinationRule");
            None
        }
    };
    if let Some(path) = name.strip_prefix(FILE_ROOT) {
        let path = match path {
            "system" => SYSTEM_ROOTS
                .into_iter()
                .find(|p| Path::new(p).exists())
                .or_else(|| {
                    tracing::warn!("no system CA bundle found (looked in {SYSTEM_ROOTS:?})");
                    None
                })?,
            path => path,
        };
        return Some(secret::Type::ValidationContext(
            CertificateValidationContext {
                trusted_ca: Some(read(path)?),
                ..CertificateValidationContext::default()
            },
        ));
    }
    let (certificate, key) = name.strip_prefix(FILE_CERT)?.split_once('~')?;
    Some(secret::Type::TlsCertificate(TlsCertificate {
        certificate_chain: Some(read(certificate)?),
        private_key: Some(read(key)?),
        ..TlsCertificate::default()
    }))
}

#[tonic::async_trait]
impl SecretDiscoveryService for SdsServer {
    type StreamSecretsStream = ReceiverStream<Result<DiscoveryResponse, Status>>;
    type DeltaSecretsStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn stream_secrets(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamSecretsStream>, Status> {
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(stream(request.into_inner(), self.certificates.clone(), tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn delta_secrets(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaSecretsStream>, Status> {
        Err(Status::unimplemented(
            "the agent serves SDS as state of the world",
        ))
    }

    async fn fetch_secrets(
        &self,
        request: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        let certificate = self.certificates.borrow().clone();
        let certificate =
            certificate.ok_or_else(|| Status::unavailable("no workload certificate yet"))?;
        let names = request.into_inner().resource_names;
        Ok(Response::new(response(&names, &certificate, 0, "0")))
    }
}

fn response(
    names: &[String],
    certificate: &WorkloadCertificate,
    generation: u64,
    nonce: &str,
) -> DiscoveryResponse {
    DiscoveryResponse {
        version_info: generation.to_string(),
        resources: names
            .iter()
            .filter_map(|n| secret(n, certificate))
            .map(pack_any)
            .collect(),
        type_url: SECRET_TYPE.into(),
        nonce: nonce.into(),
        ..DiscoveryResponse::default()
    }
}

/// One Envoy SDS stream: answers each new subscription once there is a certificate, and
/// pushes the subscribed secrets again on every renewal. ACKs need nothing; NACKs are
/// logged.
async fn stream(
    mut requests: Streaming<DiscoveryRequest>,
    mut certificates: Certificates,
    tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
) {
    let mut subscribed: Vec<String> = Vec::new();
    let mut generation = 0u64;
    loop {
        tokio::select! {
            request = requests.message() => {
                let Ok(Some(request)) = request else { return };
                if let Some(error) = &request.error_detail {
                    tracing::error!(message = %error.message, "Envoy rejected a secret");
                }
                if request.resource_names == subscribed && !request.response_nonce.is_empty() {
                    continue;
                }
                subscribed = request.resource_names;
            }
            changed = certificates.changed() => {
                if changed.is_err() { return }
            }
        }
        let Some(certificate) = certificates.borrow_and_update().clone() else {
            continue;
        };
        if subscribed.is_empty() {
            continue;
        }
        generation += 1;
        let nonce = generation.to_string();
        let sent = response(&subscribed, &certificate, generation, &nonce);
        if tx.send(Ok(sent)).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(source: Option<DataSource>) -> Vec<u8> {
        match source.and_then(|s| s.specifier) {
            Some(data_source::Specifier::InlineBytes(bytes)) => bytes,
            other => panic!("not inline bytes: {other:?}"),
        }
    }

    #[test]
    fn files_named_by_destination_rules_are_served_when_readable() {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name).display().to_string();
        std::fs::write(path("ca.crt"), "CA").unwrap();
        std::fs::write(path("tls.crt"), "CERT").unwrap();
        std::fs::write(path("tls.key"), "KEY").unwrap();

        let Some(secret::Type::ValidationContext(roots)) =
            file_secret(&format!("file-root:{}", path("ca.crt")))
        else {
            panic!("a CA bundle");
        };
        assert_eq!(bytes(roots.trusted_ca), b"CA");
        let name = format!("file-cert:{}~{}", path("tls.crt"), path("tls.key"));
        let Some(secret::Type::TlsCertificate(certificate)) = file_secret(&name) else {
            panic!("a certificate");
        };
        assert_eq!(bytes(certificate.certificate_chain), b"CERT");
        assert_eq!(bytes(certificate.private_key), b"KEY");

        // Not there, or not a name the agent serves: nothing (Envoy waits).
        let missing = format!("file-cert:{}~{}", path("tls.crt"), path("gone.key"));
        assert!(file_secret(&missing).is_none());
        assert!(file_secret(&format!("file-root:{}", path("gone.crt"))).is_none());
        assert!(file_secret("file-cert:no-separator").is_none());
        assert!(file_secret("something-else").is_none());
    }
}
