//! A captured sidecar's connections to a ServiceEntry's address ranges (`addresses` as
//! CIDRs): on the destination port's `0.0.0.0_PORT` listener, a chain per service whose
//! ranges hold the address the client dialled.

mod support;

use envoy_types::pb::envoy::config::listener::v3::Listener;
use fleetmesh_xds::{Interception, ProxyKind, ProxyResources, generate};
use prost::Message;
use support::{proxy_in, snapshot};

/// A database range (a port no HTTP service has), an overlapping second claim on the
/// same range, a range on a port where an HTTP Service is, and a single address written
/// as a /32 (a virtual IP, with its own listener).
const MESH: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: databases, namespace: shop}
spec:
  hosts: [db.internal]
  addresses: [10.8.0.0/16, "2001:db8::/32"]
  ports: [{number: 5432, name: tcp-postgres, protocol: TCP}]
  resolution: NONE
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: later, namespace: shop}
spec:
  hosts: [later.internal]
  addresses: [10.8.0.0/16]
  ports: [{number: 5432, name: tcp-postgres, protocol: TCP}]
  resolution: NONE
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: legacy, namespace: shop}
spec:
  hosts: [legacy.internal]
  addresses: [172.20.0.0/24, 172.21.0.9/32]
  ports: [{number: 9080, name: tcp, protocol: TCP}]
  resolution: NONE
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec: {clusterIP: 10.96.0.10, selector: {app: reviews}, ports: [{name: http, port: 9080}]}
"#;

fn captured() -> ProxyResources {
    let mut proxy = proxy_in(ProxyKind::Sidecar, "shop", &[("app", "web")]);
    proxy.interception = Interception::Redirect;
    generate(&snapshot(MESH), &proxy)
}

fn listener(resources: &ProxyResources, name: &str) -> Option<Listener> {
    resources
        .listeners
        .iter()
        .map(|l| Listener::decode(l.resource.value.as_slice()).unwrap())
        .find(|l| l.name == name)
}

/// Each chain of `listener` chosen by address range, as (ranges, where its TCP proxy
/// sends the connection).
fn range_chains(listener: &Listener) -> Vec<(Vec<String>, String)> {
    listener
        .filter_chains
        .iter()
        .filter_map(|c| {
            let ranges = c.filter_chain_match.clone()?.prefix_ranges;
            if ranges.is_empty() {
                return None;
            }
            let ranges = ranges
                .iter()
                .map(|r| format!("{}/{}", r.address_prefix, r.prefix_len.unwrap().value))
                .collect();
            Some((ranges, support::tcp_proxy_cluster(c)?))
        })
        .collect()
}

#[test]
fn connections_into_a_range_go_to_its_service() {
    let resources = captured();
    let on_5432 = listener(&resources, "0.0.0.0_5432").expect("a listener for the range's port");
    assert_eq!(
        range_chains(&on_5432),
        [(
            vec!["10.8.0.0/16".to_string(), "2001:db8::/32".to_string()],
            "outbound|5432||db.internal".to_string()
        )],
        "the range once, for the first service (by host name) that claims it"
    );
    assert_eq!(
        on_5432.default_filter_chain.unwrap().name,
        "PassthroughFilterChain",
        "the rest of the port passes through"
    );
    assert!(on_5432.listener_filters.is_empty(), "no TLS to inspect");

    // On a port that serves HTTP, the range comes first and the rest is HTTP.
    let on_9080 = listener(&resources, "0.0.0.0_9080").unwrap();
    assert_eq!(
        range_chains(&on_9080),
        [(
            vec!["172.20.0.0/24".to_string()],
            "outbound|9080||legacy.internal".to_string()
        )]
    );
    assert_eq!(on_9080.filter_chains.len(), 2, "{on_9080:?}");
    // A single address written as a /32 is a virtual IP with its own listener.
    assert!(listener(&resources, "172.21.0.9_9080").is_some());

    support::envoy_validate("address_ranges", &resources);
}
