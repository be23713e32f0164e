//! Gateway listeners as Envoy receives them.

mod support;

use envoy_types::pb::envoy::config::listener::v3::Listener;
use fleetmesh_xds::{ProxyKind, generate};
use prost::Message;
use support::{proxy_in, snapshot};

fn gateway(name: &str, hosts: &str) -> String {
    format!(
        r#"---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: {name}, namespace: edge}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 443, name: https, protocol: HTTPS}}
    hosts: {hosts}
    tls: {{mode: SIMPLE, serverCertificate: /etc/certs/{name}.pem, privateKey: /etc/certs/{name}.key}}
"#
    )
}

/// Two Gateways serving the same TLS host on the same port and pods: one filter chain per
/// SNI name (two would make Envoy refuse the whole listener); the first Gateway keeps it.
#[test]
fn a_tls_host_served_twice_on_a_port_gets_one_filter_chain() {
    let mesh = [
        gateway("a", "[shop.example.com, api.example.com]"),
        gateway("b", "[shop.example.com]"),
        gateway("c", "[api.example.com, admin.example.com]"),
    ]
    .concat();
    let resources = generate(
        &snapshot(&mesh),
        &proxy_in(ProxyKind::Router, "edge", &[("istio", "ingressgateway")]),
    );
    let listener = resources
        .listeners
        .iter()
        .map(|l| Listener::decode(l.resource.value.as_slice()).unwrap())
        .find(|l| l.name.ends_with("_443"))
        .expect("the 443 listener");
    let chains: Vec<(Vec<String>, String)> = listener
        .filter_chains
        .iter()
        .map(|c| {
            let names = c
                .filter_chain_match
                .clone()
                .unwrap_or_default()
                .server_names;
            // The certificate paths, as bytes of the packed TLS context.
            let socket = c.transport_socket.as_ref().map(Message::encode_to_vec);
            (
                names,
                String::from_utf8_lossy(&socket.unwrap_or_default()).into_owned(),
            )
        })
        .collect();
    assert_eq!(chains.len(), 2, "{chains:#?}");
    assert_eq!(chains[0].0, ["shop.example.com", "api.example.com"]);
    assert!(chains[0].1.contains("/etc/certs/a.pem"));
    assert_eq!(chains[1].0, ["admin.example.com"]);
    assert!(chains[1].1.contains("/etc/certs/c.pem"));
}
