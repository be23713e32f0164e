//! Any body the webhook receives is answered or refused with an error, never a panic.
#![no_main]

use fleetmesh_inject::{Channel, InjectedBy, Revision, Settings};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let settings = Settings {
        revision: Revision::of(Channel::Rapid),
        xds_address: "127.0.0.1:15010".into(),
        trust_domain: "cluster.local".into(),
        cluster_id: "fuzz".into(),
        cni_managed: false,
        injected_by: InjectedBy::Webhook,
        proxy_version: None,
        hub: fleetmesh_inject::DEFAULT_HUB.into(),
        delta_xds: false,
    };
    let _ = fleetmesh_inject::admission::admit_pod(body, &settings);
});
