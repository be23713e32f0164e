//! The DNS name table (NDS) of a sidecar whose Istio agent answers its pod's DNS.

mod support;

use fleetmesh_xds::name_table::{NAME_TABLE_TYPE, NameInfo, NameTable};
use fleetmesh_xds::{ProxyKind, generate};
use prost::Message;
use std::collections::BTreeMap;
use support::{proxy_in, snapshot};

const MESH: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec: {selector: {app: reviews}, clusterIP: 198.51.100.10, ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec: {selector: {app: db}, clusterIP: None, ports: [{name: tcp, port: 5432}]}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: bank, namespace: shop}
spec:
  hosts: [bank.example.com]
  addresses: [198.51.100.20]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: anything, namespace: shop}
spec:
  hosts: ["*.example.org"]
  addresses: [198.51.100.30]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: NONE
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: private, namespace: finance}
spec:
  hosts: [ledger.example.com]
  addresses: [198.51.100.40]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: DNS
  exportTo: ["."]
"#;

fn name_table(dns_capture: bool, kind: ProxyKind) -> Option<BTreeMap<String, NameInfo>> {
    let mut proxy = proxy_in(kind, "shop", &[("app", "frontend")]);
    proxy.dns_capture = dns_capture;
    let resources = generate(&snapshot(MESH), &proxy);
    let [table] = resources.name_tables.as_slice() else {
        assert!(resources.name_tables.is_empty(), "one table at most");
        return None;
    };
    assert_eq!(table.resource.type_url, NAME_TABLE_TYPE);
    let decoded = NameTable::decode(table.resource.value.as_slice()).expect("a NameTable");
    Some(decoded.table.into_iter().collect())
}

#[test]
fn a_sidecar_with_dns_capture_gets_the_virtual_ips_it_can_see() {
    let table = name_table(true, ProxyKind::Sidecar).expect("a name table");
    assert_eq!(
        table.keys().collect::<Vec<_>>(),
        ["bank.example.com", "reviews.shop.svc.cluster.local"],
        "no headless Service, no wildcard host, nothing another namespace keeps to itself"
    );
    assert_eq!(
        table["reviews.shop.svc.cluster.local"],
        NameInfo {
            ips: vec!["198.51.100.10".into()],
            registry: "Kubernetes".into(),
            shortname: "reviews".into(),
            namespace: "shop".into(),
        },
        "a Service's short name and namespace, so `reviews` and `reviews.shop` resolve too"
    );
    assert_eq!(
        table["bank.example.com"],
        NameInfo {
            ips: vec!["198.51.100.20".into()],
            registry: "External".into(),
            ..NameInfo::default()
        }
    );
}

#[test]
fn proxies_without_dns_capture_and_gateways_get_no_table() {
    assert_eq!(name_table(false, ProxyKind::Sidecar), None);
    assert_eq!(name_table(true, ProxyKind::Router), None);
}
