//! Any bytes as a CSR: the CA answers with a certificate or an error, never a panic.
#![no_main]

use fleetmesh_ca::{CertificateAuthority, Identity};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use std::time::Duration;

fn authority() -> &'static CertificateAuthority {
    static CA: OnceLock<(tempfile::TempDir, CertificateAuthority)> = OnceLock::new();
    &CA.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let ca = CertificateAuthority::load_or_create(
            dir.path(),
            "cluster.local",
            Duration::from_secs(86400),
        )
        .expect("a CA");
        (dir, ca)
    })
    .1
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let caller = Identity::new("default", "fuzz");
    let _ = authority().sign(&text, &caller, None);
});
