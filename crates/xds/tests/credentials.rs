//! Gateway TLS from Secrets (`credentialName`): the credential is served over SDS only to
//! a gateway of the Secret's namespace whose service account may read Secrets there; a
//! server whose credential is missing, incomplete or withheld is left out of the listener.

mod support;

use fleetmesh_model::Credential;
use fleetmesh_xds::{ProxyKind, ResourceType, generate};
use std::sync::Arc;
use support::{proxy_in, snapshot};

const GATEWAY: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: edge}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [shop.example.com]
    tls: {mode: SIMPLE, credentialName: shop-cert}
  - port: {number: 8443, name: https-mutual, protocol: HTTPS}
    hosts: [shop.example.com]
    tls: {mode: MUTUAL, credentialName: "kubernetes://shop-mtls"}
"#;

fn credential(ca: Option<&str>) -> Arc<Credential> {
    Arc::new(Credential {
        certificate_chain: Some("CERT".into()),
        private_key: Some("KEY".into()),
        ca_certificates: ca.map(str::to_string),
    })
}

fn secret_names(snapshot: &fleetmesh_model::Snapshot, namespace: &str) -> (Vec<String>, usize) {
    let mut proxy = proxy_in(ProxyKind::Router, namespace, &[("istio", "ingressgateway")]);
    proxy.service_account = "gateway".into();
    let resources = generate(snapshot, &proxy);
    let names = resources
        .of_type(ResourceType::Secret)
        .iter()
        .map(|r| r.name.clone())
        .collect();
    (names, resources.listeners.len())
}

#[test]
fn credentials_reach_only_gateways_allowed_to_read_them() {
    let mut snapshot = snapshot(GATEWAY);
    for namespace in ["edge", "other"] {
        let key = |name: &str| (namespace.to_string(), name.to_string());
        snapshot
            .credentials
            .insert(key("shop-cert"), credential(None));
        snapshot
            .credentials
            .insert(key("shop-mtls"), credential(None));
        snapshot.credentials.insert(
            key("shop-mtls-cacert"),
            Arc::new(Credential {
                ca_certificates: Some("CA".into()),
                ..Credential::default()
            }),
        );
    }
    // Not (yet) known to be allowed: no TLS server at all.
    assert_eq!(secret_names(&snapshot, "edge"), (vec![], 0));

    snapshot
        .secret_readers
        .insert(("edge".into(), "gateway".into()));
    assert_eq!(
        secret_names(&snapshot, "edge"),
        (
            vec![
                "kubernetes://shop-cert".to_string(),
                "kubernetes://shop-mtls".to_string(),
                "kubernetes://shop-mtls-cacert".to_string(),
            ],
            2
        )
    );
    // Allowed in its own namespace only: the gateway of `other` gets nothing.
    assert_eq!(secret_names(&snapshot, "other"), (vec![], 0));

    // MUTUAL without a client CA anywhere: that server is left out, SIMPLE stays.
    snapshot
        .credentials
        .remove(&("edge".to_string(), "shop-mtls-cacert".to_string()));
    assert_eq!(
        secret_names(&snapshot, "edge"),
        (vec!["kubernetes://shop-cert".to_string()], 1)
    );
}
