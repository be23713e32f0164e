//! Golden files for generated Envoy config. `UPDATE_GOLDEN=1 cargo test -p fleetmesh-xds`
//! rewrites them; review the diff. Every golden is also validated by a real Envoy.

mod support;

use fleetmesh_xds::{Interception, ProxyKind, generate};
use support::{envoy_validate, proxy_in, render, snapshot};

fn check(name: &str, kind: ProxyKind, interception: Interception, labels: &[(&str, &str)]) {
    let snapshot = snapshot(include_str!("golden/mesh.yaml"));
    let mut proxy = proxy_in(kind, "shop", labels);
    proxy.interception = interception;
    let resources = generate(&snapshot, &proxy);
    let rendered = render(&resources);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.json"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &rendered).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        expected == rendered,
        "{name}.json differs from the generated config; run with UPDATE_GOLDEN=1 and review the diff"
    );
    envoy_validate(name, &resources);
}

#[test]
fn sidecar_golden() {
    check(
        "sidecar",
        ProxyKind::Sidecar,
        Interception::None,
        &[("app", "frontend")],
    );
}

#[test]
fn gateway_golden() {
    check(
        "gateway",
        ProxyKind::Router,
        Interception::None,
        &[("istio", "ingressgateway")],
    );
}

/// With iptables capture, as in a Kubernetes pod: istiod's virtualOutbound/virtualInbound
/// layout and route configs named by port.
#[test]
fn captured_sidecar_golden() {
    check(
        "sidecar-captured",
        ProxyKind::Sidecar,
        Interception::Redirect,
        &[("app", "reviews")],
    );
}
