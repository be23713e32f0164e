//! Any bytes as a bearer token: verified or refused, never a panic.
#![no_main]

use fleetmesh_ca::TokenIssuer;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn issuer() -> &'static TokenIssuer {
    static ISSUER: OnceLock<(tempfile::TempDir, TokenIssuer)> = OnceLock::new();
    &ISSUER
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let issuer = TokenIssuer::load_or_create(dir.path()).expect("a token key");
            (dir, issuer)
        })
        .1
}

fuzz_target!(|data: &[u8]| {
    let _ = issuer().verify(&String::from_utf8_lossy(data));
});
