//! What a PEM certificate says about itself (serial number, validity), read without
//! trusting it: for renewal timing and for tools that show a proxy's certificates.

use std::time::{Duration, SystemTime};

/// One certificate's serial number and validity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateSummary {
    /// Lower-case hexadecimal, as istioctl prints it.
    pub serial: String,
    /// The start of its validity.
    pub not_before: SystemTime,
    /// The end of its validity.
    pub not_after: SystemTime,
}

/// Every `CERTIFICATE` block of `pem_text`, in order (a chain: the leaf first); other
/// blocks (a key) are skipped, never parsed.
pub fn certificates(pem_text: &str) -> Result<Vec<CertificateSummary>, String> {
    let mut found = Vec::new();
    for block in x509_parser::pem::Pem::iter_from_buffer(pem_text.as_bytes()) {
        let block = block.map_err(|e| format!("not PEM: {e}"))?;
        if block.label != "CERTIFICATE" {
            continue;
        }
        let certificate = block
            .parse_x509()
            .map_err(|e| format!("not an X.509 certificate: {e}"))?;
        let time = |t: x509_parser::time::ASN1Time| {
            SystemTime::UNIX_EPOCH + Duration::from_secs(t.timestamp().max(0) as u64)
        };
        found.push(CertificateSummary {
            serial: certificate.serial.to_str_radix(16),
            not_before: time(certificate.validity().not_before),
            not_after: time(certificate.validity().not_after),
        });
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_is_read_leaf_first_and_keys_are_skipped() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["a.example".into()]).unwrap();
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x0a, 0xbc]));
        params.not_before = rcgen::date_time_ymd(2026, 1, 2);
        params.not_after = rcgen::date_time_ymd(2027, 1, 2);
        let leaf = params.self_signed(&key).unwrap().pem();
        let ca = rcgen::CertificateParams::new(vec!["ca.example".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap()
            .pem();
        let found = certificates(&format!("{leaf}{}{ca}", key.serialize_pem())).unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].serial, "abc");
        let day = |secs: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        assert_eq!(found[0].not_before, day(1_767_312_000));
        assert_eq!(found[0].not_after, day(1_798_848_000));
        assert!(
            certificates("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").is_err()
        );
        assert_eq!(certificates("").unwrap(), Vec::new());
    }
}
