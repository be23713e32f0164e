//! The Envoy descriptor set that `json.rs` embeds (`crates/xds/envoy-descriptors.bin`) is
//! compiled from envoy-types' own .proto files: this test compiles them again and fails on
//! a difference. It is checked in so that building never has to locate those sources (a
//! build script that asked `cargo metadata --offline` failed on a fresh machine whose
//! registry held only the crates of the package being built).
//!
//! After upgrading envoy-types or changing `FILES`:
//! `UPDATE_DESCRIPTORS=1 cargo test -p fleetmesh-xds --test descriptors`, then review.

use std::path::PathBuf;
use std::process::Command;

const CHECKED_IN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/envoy-descriptors.bin");

/// Every message type meshd puts in a resource (others are reached through imports).
const FILES: &[&str] = &[
    "envoy/config/bootstrap/v3/bootstrap.proto",
    "envoy/config/cluster/v3/cluster.proto",
    "envoy/config/endpoint/v3/endpoint.proto",
    "envoy/config/listener/v3/listener.proto",
    "envoy/config/route/v3/route.proto",
    "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto",
    "envoy/extensions/filters/http/router/v3/router.proto",
    "envoy/extensions/filters/listener/original_dst/v3/original_dst.proto",
    "envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.proto",
    "envoy/extensions/filters/http/cors/v3/cors.proto",
    "envoy/extensions/filters/http/fault/v3/fault.proto",
    "envoy/extensions/retry/host/previous_hosts/v3/previous_hosts.proto",
    "envoy/extensions/transport_sockets/tls/v3/tls.proto",
    "envoy/extensions/transport_sockets/raw_buffer/v3/raw_buffer.proto",
    "envoy/extensions/filters/listener/tls_inspector/v3/tls_inspector.proto",
    "envoy/extensions/filters/http/rbac/v3/rbac.proto",
    "envoy/extensions/filters/network/rbac/v3/rbac.proto",
    "envoy/extensions/filters/http/jwt_authn/v3/config.proto",
    "envoy/extensions/upstreams/http/v3/http_protocol_options.proto",
    "envoy/extensions/access_loggers/stats/v3/stats.proto",
    "envoy/extensions/filters/http/header_to_metadata/v3/header_to_metadata.proto",
];

/// The `proto` directory shipped in the envoy-types crate this workspace locks. Tests run
/// after the whole workspace was fetched, so asking cargo is safe here (not in a build).
fn envoy_types_protos() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked"])
        .arg("--manifest-path")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON");
    let envoy_types = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .find(|p| p["name"] == "envoy-types")
        .expect("envoy-types is a dependency");
    PathBuf::from(
        envoy_types["manifest_path"]
            .as_str()
            .expect("manifest path"),
    )
    .parent()
    .expect("crate directory")
    .join("proto")
}

#[test]
fn the_descriptor_set_is_compiled_from_envoy_types_protos() {
    let proto = envoy_types_protos();
    let includes = [
        "data-plane-api",
        "xds",
        "protoc-gen-validate",
        "googleapis",
        "cel-spec/proto",
        "opentelemetry-proto",
        "client_model",
    ]
    .map(|dir| proto.join(dir));
    let descriptors = protox::compile(FILES, includes).expect("Envoy protos compile");
    let compiled = prost::Message::encode_to_vec(&descriptors);
    if std::env::var_os("UPDATE_DESCRIPTORS").is_some() {
        std::fs::write(CHECKED_IN, &compiled).expect("write the descriptor set");
    }
    let checked_in = std::fs::read(CHECKED_IN).unwrap_or_default();
    assert!(
        checked_in == compiled,
        "crates/xds/envoy-descriptors.bin is stale: run UPDATE_DESCRIPTORS=1 cargo test -p fleetmesh-xds --test descriptors and review"
    );
}
