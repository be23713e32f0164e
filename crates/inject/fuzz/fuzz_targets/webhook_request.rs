//! What anyone reaching the webhook port can send to inject: a URL path (first line)
//! and a body. The path is read as install writes it, and a path that reads is injected
//! with; an answer or a refusal, never a panic.
#![no_main]

use fleetmesh_inject::webhook_path::InjectPath;
use fleetmesh_inject::{InjectedBy, Settings};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (path, body) = match data.iter().position(|b| *b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let Ok(path) = std::str::from_utf8(path) else {
        return;
    };
    let Ok(read) = InjectPath::parse(path) else {
        return;
    };
    assert_eq!(InjectPath::parse(&read.to_path()).as_ref(), Ok(&read));
    let settings = Settings {
        revision: read.revision,
        xds_address: "127.0.0.1:15012".into(),
        trust_domain: "cluster.local".into(),
        cluster_id: read.cluster,
        cni_managed: read.cni_managed,
        injected_by: InjectedBy::Webhook,
        proxy_version: None,
        hub: read.hub,
        delta_xds: false,
    };
    let _ = fleetmesh_inject::admission::admit_pod(body, &settings);
});
