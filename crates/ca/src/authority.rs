//! The signing side of the CA. Its files use Istio's `cacerts` layout, so a directory of
//! an existing Istio mesh's plug-in certs works unchanged (migration keeps the root):
//!
//! - `ca-cert.pem`: the certificate that signs workload certificates;
//! - `ca-key.pem`: its private key (PKCS#8, 0600);
//! - `cert-chain.pem`: `ca-cert.pem` up to the root;
//! - `root-cert.pem`: the trust bundle: every root workloads accept (one, or two during a
//!   root rotation).
//!
//! Without these files a self-signed root is created on first start.

use crate::files;
use crate::identity::Identity;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use std::path::{Path, PathBuf};
use std::time::Duration;
use time::OffsetDateTime;

/// The signing certificate, in the CA directory (Istio's plug-in CA file names).
pub const CA_CERT: &str = "ca-cert.pem";
/// Its key (0600).
pub const CA_KEY: &str = "ca-key.pem";
/// The chain from the signing certificate up to (not including) the root.
pub const CERT_CHAIN: &str = "cert-chain.pem";
/// The roots workloads trust.
pub const ROOT_CERT: &str = "root-cert.pem";

/// Istio's default workload certificate lifetime.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
/// Larger requests are refused before parsing (a CSR is well under 2 KiB).
pub const MAX_CSR_BYTES: usize = 64 * 1024;
const ROOT_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Certificates start a little in the past so a workload whose clock lags meshd's still
/// accepts them at once.
const BACKDATE: Duration = Duration::from_secs(60);

/// Why the CA directory could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A file could not be read or written.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said (in the message, not repeated as a source).
        error: std::io::Error,
    },
    /// A file holds something unusable.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A new root could not be made.
    #[error("creating the root certificate: {0}")]
    Generate(rcgen::Error),
}

/// Why a CSR was not signed; each maps to the gRPC status Istio's CA returns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// Over the size limit (bytes sent).
    #[error("the CSR is {0} bytes; the limit is {MAX_CSR_BYTES}")]
    TooLarge(usize),
    /// Not a PEM certificate request with one SPIFFE id.
    #[error("the CSR is not a valid PEM certificate request: {0}")]
    Malformed(String),
    /// It names another identity than the caller's token proves.
    #[error("the CSR asks for {requested}, but the caller is {caller}")]
    ForeignIdentity {
        /// The SPIFFE id in the CSR.
        requested: String,
        /// The identity the token proved.
        caller: String,
    },
    /// It asks for a longer lifetime than the CA allows.
    #[error("the requested lifetime of {requested:?} exceeds the maximum of {max:?}")]
    TtlTooLong {
        /// The lifetime asked for.
        requested: Duration,
        /// The CA's limit.
        max: Duration,
    },
    /// The CA failed (not the caller's fault).
    #[error("signing failed: {0}")]
    Signing(String),
}

impl From<SignError> for tonic::Status {
    fn from(error: SignError) -> tonic::Status {
        match error {
            SignError::ForeignIdentity { .. } => {
                tonic::Status::permission_denied(error.to_string())
            }
            SignError::Signing(_) => tonic::Status::internal(error.to_string()),
            _ => tonic::Status::invalid_argument(error.to_string()),
        }
    }
}

/// The mesh CA: signs workload certificates under its (possibly rotating) roots.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    /// PEM certificates between a workload certificate and the root (without roots).
    intermediates: Vec<String>,
    /// The trust bundle, PEM: every root workloads accept.
    roots: String,
    trust_domain: String,
    max_ttl: Duration,
}

impl CertificateAuthority {
    /// Loads the CA from `dir`, creating a self-signed root there on first start.
    pub fn load_or_create(
        dir: &Path,
        trust_domain: &str,
        max_ttl: Duration,
    ) -> Result<CertificateAuthority, LoadError> {
        std::fs::create_dir_all(dir).map_err(|error| LoadError::Io {
            path: dir.to_path_buf(),
            error,
        })?;
        if !dir.join(CA_KEY).exists() {
            create_root(dir, trust_domain)?;
            tracing::info!(dir = %dir.display(), "created a new mesh root certificate");
        }
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|error| LoadError::Io { path, error })
        };
        let invalid = |name: &str, reason: String| LoadError::Invalid {
            path: dir.join(name),
            reason,
        };
        let key = KeyPair::from_pem(&read(CA_KEY)?).map_err(|e| {
            invalid(
                CA_KEY,
                format!("{e} (the key must be unencrypted PKCS#8, `BEGIN PRIVATE KEY`)"),
            )
        })?;
        let ca_cert = read(CA_CERT)?;
        check_key_matches(&ca_cert, &key).map_err(|reason| invalid(CA_KEY, reason))?;
        let issuer =
            Issuer::from_ca_cert_pem(&ca_cert, key).map_err(|e| invalid(CA_CERT, e.to_string()))?;
        let roots = read(ROOT_CERT)?;
        let root_ders = pem_blocks(&roots).map_err(|e| invalid(ROOT_CERT, e))?;
        if root_ders.is_empty() {
            return Err(invalid(ROOT_CERT, "holds no certificate".into()));
        }
        let chain = read(CERT_CHAIN)?;
        let intermediates = pem_blocks(&chain)
            .map_err(|e| invalid(CERT_CHAIN, e))?
            .into_iter()
            .filter(|der| !root_ders.contains(der))
            .map(|der| {
                let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
                pem::encode_config(&pem::Pem::new("CERTIFICATE", der), config)
            })
            .collect();
        Ok(CertificateAuthority {
            issuer,
            intermediates,
            roots,
            trust_domain: trust_domain.into(),
            max_ttl,
        })
    }

    /// The trust domain of the identities it signs.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The trust bundle (PEM), as workloads receive it.
    pub fn roots(&self) -> &str {
        &self.roots
    }

    /// Signs `csr` for `caller`, valid for `ttl` (`None`: the default); returns Istio's
    /// chain: the workload certificate, any intermediates, and the trust bundle last.
    pub fn sign(
        &self,
        csr: &str,
        caller: &Identity,
        ttl: Option<Duration>,
    ) -> Result<Vec<String>, SignError> {
        if csr.len() > MAX_CSR_BYTES {
            return Err(SignError::TooLarge(csr.len()));
        }
        let ttl = ttl.unwrap_or(DEFAULT_TTL);
        if ttl > self.max_ttl {
            return Err(SignError::TtlTooLong {
                requested: ttl,
                max: self.max_ttl,
            });
        }
        let request = CertificateSigningRequestParams::from_pem(csr)
            .map_err(|e| SignError::Malformed(e.to_string()))?;
        let spiffe_id = caller.spiffe_id(&self.trust_domain);
        for san in &request.params.subject_alt_names {
            let matches = matches!(san, SanType::URI(uri) if uri.as_str() == spiffe_id);
            if !matches {
                return Err(SignError::ForeignIdentity {
                    requested: describe_san(san),
                    caller: spiffe_id,
                });
            }
        }
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        params.not_before = now - BACKDATE;
        params.not_after = now + ttl;
        params.serial_number = Some(random_serial().map_err(SignError::Signing)?);
        params.subject_alt_names =
            vec![SanType::URI(spiffe_id.clone().try_into().map_err(
                |e: rcgen::Error| SignError::Signing(e.to_string()),
            )?)];
        params.distinguished_name = DistinguishedName::new();
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.is_ca = IsCa::ExplicitNoCa;
        params.use_authority_key_identifier_extension = true;
        let certificate = CertificateSigningRequestParams {
            params,
            public_key: request.public_key,
        }
        .signed_by(&self.issuer)
        .map_err(|e| SignError::Signing(e.to_string()))?;
        let mut chain = vec![certificate.pem()];
        chain.extend(self.intermediates.iter().cloned());
        chain.push(self.roots.clone());
        Ok(chain)
    }
}

/// A TLS server certificate for meshd itself, e.g. the admission webhooks the API server
/// calls: the CA's roots are the `caBundle` that verifies it.
pub struct ServingCertificate {
    /// The certificate, then any intermediates (PEM).
    pub chain: String,
    /// Its PKCS#8 key (PEM). Never logged.
    pub key: String,
}

impl CertificateAuthority {
    /// Issues a server certificate for `hosts` (DNS names or IP addresses), valid for `ttl`.
    pub fn issue_serving_certificate(
        &self,
        hosts: &[String],
        ttl: Duration,
    ) -> Result<ServingCertificate, SignError> {
        let signing = |e: rcgen::Error| SignError::Signing(e.to_string());
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(signing)?;
        let mut params = CertificateParams::new(hosts.to_vec()).map_err(signing)?;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + ttl;
        params.serial_number = Some(random_serial().map_err(SignError::Signing)?);
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, "meshd");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.is_ca = IsCa::ExplicitNoCa;
        params.use_authority_key_identifier_extension = true;
        let certificate = params.signed_by(&key, &self.issuer).map_err(signing)?;
        let mut chain = certificate.pem();
        for intermediate in &self.intermediates {
            chain.push_str(intermediate);
        }
        Ok(ServingCertificate {
            chain,
            key: key.serialize_pem(),
        })
    }
}

/// A key that is not the certificate's would sign certificates nobody can verify (a
/// half-replaced directory, or a wrong plug-in file): refuse to load it.
fn check_key_matches(ca_cert: &str, key: &KeyPair) -> Result<(), String> {
    use x509_parser::prelude::*;
    let (_, block) = parse_x509_pem(ca_cert.as_bytes()).map_err(|e| format!("{CA_CERT}: {e}"))?;
    let (_, cert) =
        X509Certificate::from_der(&block.contents).map_err(|e| format!("{CA_CERT}: {e}"))?;
    if cert.public_key().raw == rcgen::PublicKeyData::subject_public_key_info(key).as_slice() {
        Ok(())
    } else {
        Err(format!("this key is not the key of {CA_CERT}"))
    }
}

fn describe_san(san: &SanType) -> String {
    match san {
        SanType::URI(uri) => uri.as_str().to_string(),
        SanType::DnsName(name) => format!("DNS name {}", name.as_str()),
        SanType::IpAddress(ip) => format!("IP address {ip}"),
        SanType::Rfc822Name(mail) => format!("email {}", mail.as_str()),
        other => format!("{other:?}"),
    }
}

fn random_serial() -> Result<SerialNumber, String> {
    let mut bytes = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| "no system randomness".to_string())?;
    // Positive, as DER integers for serials must be.
    bytes[0] &= 0x7f;
    Ok(SerialNumber::from_slice(&bytes))
}

/// The DER bodies of every `CERTIFICATE` block in `text`.
fn pem_blocks(text: &str) -> Result<Vec<Vec<u8>>, String> {
    let blocks = pem::parse_many(text).map_err(|e| e.to_string())?;
    Ok(blocks
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| b.into_contents())
        .collect())
}

/// A new self-signed root: (certificate PEM, PKCS#8 key PEM). ECDSA P-256, ten years.
pub(crate) fn generate_root(trust_domain: &str) -> Result<(String, String), rcgen::Error> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + ROOT_LIFETIME;
    params.serial_number = Some(random_serial().map_err(rcgen::Error::PemError)?);
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, trust_domain);
    params
        .distinguished_name
        .push(DnType::CommonName, "fleetmesh root CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let root = params.self_signed(&key)?;
    Ok((root.pem(), key.serialize_pem()))
}

/// A self-signed root, written in the `cacerts` layout.
fn create_root(dir: &Path, trust_domain: &str) -> Result<(), LoadError> {
    let (root, key) = generate_root(trust_domain).map_err(LoadError::Generate)?;
    let write = |name: &str, text: &str, private: bool| {
        let path = dir.join(name);
        let result = if private {
            files::write_private(&path, text.as_bytes())
        } else {
            files::write_public(&path, text.as_bytes())
        };
        result.map_err(|error| LoadError::Io { path, error })
    };
    write(CA_CERT, &root, false)?;
    write(CERT_CHAIN, &root, false)?;
    write(ROOT_CERT, &root, false)?;
    // The key last: its presence is what marks the directory as complete.
    write(CA_KEY, &key, true)
}
