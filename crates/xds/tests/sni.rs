//! A captured sidecar's TLS to destinations without a virtual IP, told apart by SNI name.

mod support;

use envoy_types::pb::envoy::config::listener::v3::Listener;
use fleetmesh_xds::{Interception, ProxyKind, ProxyResources, generate};
use prost::Message;
use support::{proxy_in, snapshot};

/// Two HTTPS ServiceEntries without addresses, one of them sent to an egress gateway by a
/// mesh VirtualService's `tls` route (Istio's egress gateway task), an HTTP service on
/// port 8443 beside a TLS ServiceEntry there, and a TLS ServiceEntry with an address
/// whose `tls` route sends it elsewhere.
const MESH: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: bank, namespace: shop}
spec:
  hosts: [bank.example.com]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: news, namespace: shop}
spec:
  hosts: [news.example.com]
  ports: [{number: 443, name: https, protocol: HTTPS}]
  resolution: DNS
---
apiVersion: v1
kind: Service
metadata: {name: egressgateway, namespace: shop}
spec: {clusterIP: 10.96.0.20, selector: {istio: egressgateway}, ports: [{name: tls, port: 443}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: news-through-egress, namespace: shop}
spec:
  hosts: [news.example.com]
  gateways: [mesh]
  tls:
  - match: [{port: 443, sniHosts: [news.example.com]}]
    route: [{destination: {host: egressgateway, port: {number: 443}}}]
  - match: [{port: 443, sniHosts: [news.example.com], sourceLabels: {app: nobody}}]
    route: [{destination: {host: bank.example.com}}]
---
apiVersion: v1
kind: Service
metadata: {name: portal, namespace: shop}
spec: {selector: {app: portal}, ports: [{name: http, port: 8443}]}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: vault, namespace: shop}
spec:
  hosts: [vault.example.com]
  ports: [{number: 8443, name: tls, protocol: TLS}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ledger, namespace: shop}
spec:
  hosts: [ledger.example.com]
  addresses: [240.0.0.1]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ledger-moved, namespace: shop}
spec:
  hosts: [ledger.example.com]
  tls:
  - match: [{sniHosts: [ledger.example.com]}]
    route: [{destination: {host: bank.example.com, port: {number: 443}}}]
"#;

fn captured(registry_only: bool) -> ProxyResources {
    let mut snapshot = snapshot(MESH);
    snapshot.mesh.registry_only = registry_only;
    let mut proxy = proxy_in(ProxyKind::Sidecar, "shop", &[("app", "web")]);
    proxy.interception = Interception::Redirect;
    generate(&snapshot, &proxy)
}

fn listener(resources: &ProxyResources, name: &str) -> Listener {
    resources
        .listeners
        .iter()
        .map(|l| Listener::decode(l.resource.value.as_slice()).unwrap())
        .find(|l| l.name == name)
        .unwrap_or_else(|| panic!("no listener {name}"))
}

/// Each SNI chain of `listener` as (server names, cluster its TCP proxy sends to).
fn sni_chains(listener: &Listener) -> Vec<(Vec<String>, String)> {
    listener
        .filter_chains
        .iter()
        .filter_map(|c| {
            let names = c.filter_chain_match.clone()?.server_names;
            Some((names, support::tcp_proxy_cluster(c)?))
        })
        .collect()
}

#[test]
fn tls_without_a_virtual_ip_is_routed_by_its_sni_name() {
    let resources = captured(false);
    let on_443 = listener(&resources, "0.0.0.0_443");
    assert_eq!(
        sni_chains(&on_443),
        [
            (
                vec!["bank.example.com".to_string()],
                "outbound|443||bank.example.com".to_string()
            ),
            // The VirtualService's route, not the service itself; the route for other
            // source labels does not apply to this proxy.
            (
                vec!["news.example.com".to_string()],
                "outbound|443||egressgateway.shop.svc.cluster.local".to_string()
            ),
        ]
    );
    assert_eq!(
        on_443.listener_filters[0].name,
        "envoy.filters.listener.tls_inspector"
    );
    assert_eq!(
        on_443.default_filter_chain.unwrap().name,
        "PassthroughFilterChain"
    );
    // Known by its address, a TLS ServiceEntry keeps its own listener, where its
    // VirtualService's `tls` route applies by SNI name too.
    assert_eq!(
        sni_chains(&listener(&resources, "240.0.0.1_443")),
        [(
            vec!["ledger.example.com".to_string()],
            "outbound|443||bank.example.com".to_string()
        )]
    );

    // On a port that also serves HTTP, TLS names come first and the rest is HTTP.
    let on_8443 = listener(&resources, "0.0.0.0_8443");
    assert_eq!(
        sni_chains(&on_8443),
        [(
            vec!["vault.example.com".to_string()],
            "outbound|8443||vault.example.com".to_string()
        )]
    );
    assert_eq!(on_8443.filter_chains.len(), 2, "{on_8443:?}");
    support::envoy_validate("sni", &resources);
}

#[test]
fn under_registry_only_other_names_go_nowhere() {
    let on_443 = listener(&captured(true), "0.0.0.0_443");
    assert_eq!(
        on_443.default_filter_chain.unwrap().name,
        "BlackHoleFilterChain"
    );
}
