//! A document a `jwksUri` answered with, as meshd checks it before any proxy gets it: a
//! key count or a reason, never a panic.
#![no_main]

use fleetmesh_api::security::jwks::{MAX_KEYS, check};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(keys) = check(text) {
        assert!((1..=MAX_KEYS).contains(&keys));
    }
});
