//! Any text as a config file: refused with errors, or accepted, and then every proxy's
//! config builds from it (a sidecar and a gateway, encoded as they would be sent). What
//! validation lets through must never panic the translation.
#![no_main]

mod common;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use fleetmesh_model::Snapshot;
use fleetmesh_xds::Proxy;
use libfuzzer_sys::fuzz_target;

fn node(id: &str, labels: &[(&str, &str)]) -> Node {
    let text = |s: &str| Value {
        kind: Some(Kind::StringValue(s.to_string())),
    };
    let labels = Struct {
        fields: labels.iter().map(|(k, v)| (k.to_string(), text(v))).collect(),
    };
    let node = Node {
        id: id.to_string(),
        metadata: Some(Struct {
            fields: [
                ("LABELS".to_string(), Value { kind: Some(Kind::StructValue(labels)) }),
                ("SERVICE_ACCOUNT".to_string(), text("default")),
            ]
            .into(),
        }),
        ..Node::default()
    };
    assert!(Proxy::from_node(&node).is_ok(), "a valid node: {id}");
    node
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(loaded) = fleetmesh_api::load_documents(None, text) else {
        return;
    };
    let snapshot = Snapshot::of_config(loaded.iter().map(|l| &l.resource).collect());
    let proxies = [
        node("sidecar~127.0.0.20~app-0.default~default.svc.cluster.local", &[("app", "web")]),
        node("router~127.0.0.30~gw-0.default~default.svc.cluster.local", &[("istio", "ingressgateway")]),
    ];
    for proxy in &proxies {
        common::serve_from(&snapshot, proxy);
    }
});
