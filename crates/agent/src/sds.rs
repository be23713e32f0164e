//! SDS for Envoy on a Unix socket, as Istio's agent serves it: secret `default` (the
//! workload's certificate and key) and `ROOTCA` (the trust bundle), pushed again whenever
//! the certificate is renewed; and files of its host (`file-root:PATH`,
//! `file-root:system`, `file-cert:CERT~KEY`): the certificates a gateway's Gateway names
//! and those of TLS the proxy originates outside the mesh. Files are read again every
//! few seconds, so one mounted after Envoy asked for it, or replaced, reaches Envoy.

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
use envoy_types::pb::google::protobuf::Any;
use envoy_types::util::pack_any;
use std::path::Path;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

pub const CERTIFICATE_SECRET: &str = "default";
pub const ROOT_SECRET: &str = "ROOTCA";
/// How often files named by secrets are read again (Kubernetes updates a mounted Secret
/// within about a minute; this adds little to that).
const FILE_POLL: Duration = Duration::from_secs(5);
/// Why the workload's own secrets cannot be served yet.
const NO_CERTIFICATE: &str = "no workload certificate yet";
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

/// The secret `name`, made of the workload's `certificate` or read from files, or why
/// the agent cannot serve it (now). File secrets need no workload certificate.
pub fn secret(name: &str, certificate: Option<&WorkloadCertificate>) -> Result<Secret, String> {
    let pem = |text: &str| inline(text.as_bytes().to_vec());
    let issued = || certificate.ok_or_else(|| NO_CERTIFICATE.to_string());
    let r#type = match name {
        CERTIFICATE_SECRET => secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: Some(pem(&issued()?.chain)),
            private_key: Some(pem(&issued()?.key)),
            ..TlsCertificate::default()
        }),
        ROOT_SECRET => secret::Type::ValidationContext(CertificateValidationContext {
            trusted_ca: Some(pem(&issued()?.roots)),
            ..CertificateValidationContext::default()
        }),
        other => file_secret(other)?,
    };
    Ok(Secret {
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
/// `file-root:system` the system's), `file-root:PATH~CRL` (with revocation lists),
/// `file-cert:CERT~KEY`; or why it cannot be (the error names the path, never the
/// content). Until it can, Envoy waits for it.
fn file_secret(name: &str) -> Result<secret::Type, String> {
    let read = |path: &str| {
        std::fs::read(path)
            .map(inline)
            .map_err(|error| format!("cannot read {path}: {error}"))
    };
    if let Some(roots) = name.strip_prefix(FILE_ROOT) {
        let (path, crl) = match roots.split_once('~') {
            Some((path, crl)) => (path, Some(read(crl)?)),
            None => (roots, None),
        };
        let path = match path {
            "system" => SYSTEM_ROOTS
                .into_iter()
                .find(|p| Path::new(p).exists())
                .ok_or_else(|| format!("no system CA bundle (looked in {SYSTEM_ROOTS:?})"))?,
            path => path,
        };
        return Ok(secret::Type::ValidationContext(
            CertificateValidationContext {
                trusted_ca: Some(read(path)?),
                crl,
                ..CertificateValidationContext::default()
            },
        ));
    }
    let (certificate, key) = name
        .strip_prefix(FILE_CERT)
        .and_then(|pair| pair.split_once('~'))
        .ok_or_else(|| format!("{name:?} is not a secret the agent serves"))?;
    Ok(secret::Type::TlsCertificate(TlsCertificate {
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
        let names = request.into_inner().resource_names;
        let (resources, problems) = secrets(&names, certificate.as_deref());
        if !problems.is_empty() {
            return Err(Status::unavailable(problems.join("; ")));
        }
        Ok(Response::new(response(resources, 0)))
    }
}

/// The secrets of `names` the agent can serve now, and why the others cannot be.
fn secrets(names: &[String], certificate: Option<&WorkloadCertificate>) -> (Vec<Any>, Vec<String>) {
    let mut resources = Vec::new();
    let mut problems = Vec::new();
    for name in names {
        match secret(name, certificate) {
            Ok(secret) => resources.push(pack_any(secret)),
            Err(problem) => problems.push(problem),
        }
    }
    (resources, problems)
}

fn response(resources: Vec<Any>, generation: u64) -> DiscoveryResponse {
    DiscoveryResponse {
        version_info: generation.to_string(),
        resources,
        type_url: SECRET_TYPE.into(),
        nonce: generation.to_string(),
        ..DiscoveryResponse::default()
    }
}

/// One Envoy SDS stream: answers each new subscription once its secrets can be served
/// (the workload's once there is a certificate; files once they can be read), and pushes
/// the subscribed secrets again on every renewal and whenever a file behind one changes.
/// A response never lacks a subscribed secret (Envoy would take that as its removal).
/// ACKs need nothing; NACKs are logged, as is a file that cannot be read (once, not at
/// every poll).
async fn stream(
    mut requests: Streaming<DiscoveryRequest>,
    mut certificates: Certificates,
    tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
) {
    let mut subscribed: Vec<String> = Vec::new();
    let mut generation = 0u64;
    let mut sent: Option<Vec<Any>> = None;
    let mut logged = Vec::new();
    let mut poll = tokio::time::interval(FILE_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let asked = tokio::select! {
            request = requests.message() => {
                let Ok(Some(request)) = request else { return };
                if let Some(error) = &request.error_detail {
                    tracing::error!(message = %error.message, "Envoy rejected a secret");
                }
                if request.resource_names == subscribed && !request.response_nonce.is_empty() {
                    continue;
                }
                subscribed = request.resource_names;
                true
            }
            changed = certificates.changed() => {
                if changed.is_err() { return }
                false
            }
            _ = poll.tick(), if subscribed.iter().any(|name| is_file(name)) => false,
        };
        let certificate = certificates.borrow_and_update().clone();
        if subscribed.is_empty() {
            continue;
        }
        let (resources, problems) = secrets(&subscribed, certificate.as_deref());
        // Waiting for the first certificate is not worth a warning.
        let problems: Vec<String> = problems
            .into_iter()
            .filter(|p| p != NO_CERTIFICATE)
            .collect();
        if problems != logged {
            for problem in &problems {
                tracing::warn!("{problem}");
            }
            logged = problems;
        }
        let complete = resources.len() == subscribed.len();
        if !complete || (!asked && sent.as_ref() == Some(&resources)) {
            continue;
        }
        generation += 1;
        sent = Some(resources.clone());
        if tx.send(Ok(response(resources, generation))).await.is_err() {
            return;
        }
    }
}

/// A secret read from files of this host (which can appear or change at any time).
fn is_file(name: &str) -> bool {
    name.starts_with(FILE_ROOT) || name.starts_with(FILE_CERT)
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

        let Ok(secret::Type::ValidationContext(roots)) =
            file_secret(&format!("file-root:{}", path("ca.crt")))
        else {
            panic!("a CA bundle");
        };
        assert_eq!(bytes(roots.trusted_ca), b"CA");
        assert!(roots.crl.is_none());
        std::fs::write(path("ca.crl"), "CRL").unwrap();
        let Ok(secret::Type::ValidationContext(roots)) =
            file_secret(&format!("file-root:{}~{}", path("ca.crt"), path("ca.crl")))
        else {
            panic!("a CA bundle with revocation lists");
        };
        assert_eq!(bytes(roots.trusted_ca), b"CA");
        assert_eq!(bytes(roots.crl), b"CRL");
        let name = format!("file-cert:{}~{}", path("tls.crt"), path("tls.key"));
        let Ok(secret::Type::TlsCertificate(certificate)) = file_secret(&name) else {
            panic!("a certificate");
        };
        assert_eq!(bytes(certificate.certificate_chain), b"CERT");
        assert_eq!(bytes(certificate.private_key), b"KEY");

        // Not there, or not a name the agent serves: nothing (Envoy waits), and why.
        let missing = format!("file-cert:{}~{}", path("tls.crt"), path("gone.key"));
        let why = file_secret(&missing).unwrap_err();
        assert!(why.contains("gone.key"), "{why}");
        assert!(file_secret(&format!("file-root:{}", path("gone.crt"))).is_err());
        let no_crl = format!("file-root:{}~{}", path("ca.crt"), path("gone.crl"));
        assert!(file_secret(&no_crl).unwrap_err().contains("gone.crl"));
        assert!(file_secret("file-cert:no-separator").is_err());
        assert!(file_secret("something-else").is_err());
    }
}
