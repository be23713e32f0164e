//! The workload's side of issuance: a fresh ECDSA P-256 key and a CSR naming the SPIFFE id.
//! The key never leaves the workload; only the CSR travels to the CA.

use rcgen::{CertificateParams, KeyPair, SanType};

/// A new key and the request to certify it.
pub struct KeyAndCsr {
    /// PKCS#8 PEM; a secret, never logged.
    pub key_pem: String,
    /// The CSR, PEM.
    pub csr_pem: String,
}

/// A fresh key and a CSR for `spiffe_id`.
pub fn generate(spiffe_id: &str) -> Result<KeyAndCsr, rcgen::Error> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(spiffe_id.try_into()?)];
    let csr = params.serialize_request(&key)?;
    Ok(KeyAndCsr {
        key_pem: key.serialize_pem(),
        csr_pem: csr.pem()?,
    })
}
