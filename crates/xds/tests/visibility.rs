//! What a proxy sees: exportTo and Sidecar egress scoping.

mod support;

use fleetmesh_xds::{ProxyKind, generate};
use support::{proxy_in, snapshot};

const MESH: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: billing, namespace: finance}
spec: {selector: {app: billing}, ports: [{name: http, port: 8080}]}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: private-api, namespace: finance}
spec:
  hosts: [bank.example.com]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: DNS
  exportTo: ["."]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: billing, namespace: finance}
spec:
  hosts: [billing]
  exportTo: ["."]
  http: [{match: [{uri: {prefix: /private}}], route: [{destination: {host: billing}}]}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: shop}
spec:
  egress: [{hosts: ["./*", "istio-system/*"]}]
"#;

fn cluster_names(namespace: &str) -> Vec<String> {
    let resources = generate(
        &snapshot(MESH),
        &proxy_in(ProxyKind::Sidecar, namespace, &[("app", "x")]),
    );
    resources
        .clusters
        .iter()
        .map(|c| c.name.clone())
        .filter(|n| n.starts_with("outbound"))
        .collect()
}

#[test]
fn sidecar_egress_limits_a_namespace_to_its_own_services() {
    assert_eq!(
        cluster_names("shop"),
        ["outbound|9080||reviews.shop.svc.cluster.local"]
    );
}

#[test]
fn export_to_dot_hides_from_other_namespaces() {
    assert_eq!(
        cluster_names("finance"),
        [
            "outbound|443||bank.example.com",
            "outbound|8080||billing.finance.svc.cluster.local",
            "outbound|9080||reviews.shop.svc.cluster.local"
        ]
    );
    assert_eq!(
        cluster_names("web"),
        [
            "outbound|8080||billing.finance.svc.cluster.local",
            "outbound|9080||reviews.shop.svc.cluster.local"
        ]
    );
}

#[test]
fn a_virtual_service_exported_to_its_namespace_applies_only_there() {
    let routes = |namespace: &str| {
        let resources = generate(
            &snapshot(MESH),
            &proxy_in(ProxyKind::Sidecar, namespace, &[]),
        );
        support::render(&resources)
    };
    assert!(
        routes("finance").contains("\"prefix\": \"/private\""),
        "finance's own proxies use it"
    );
    assert!(
        !routes("web").contains("/private"),
        "other namespaces get the default route"
    );
}

/// `outboundTrafficPolicy`: the mesh's, unless the proxy's Sidecar says otherwise.
#[test]
fn registry_only_drops_unknown_destinations() {
    use fleetmesh_xds::Interception;
    // The virtual outbound listener's default chain, and the last virtual host of each
    // HTTP port's routes (where requests for unknown hosts go).
    let unknown = |registry_only: bool, namespace: &str| {
        let mut snapshot = snapshot(MESH);
        snapshot.mesh.registry_only = registry_only;
        let mut proxy = proxy_in(ProxyKind::Sidecar, namespace, &[]);
        proxy.interception = Interception::Redirect;
        let rendered = support::render(&generate(&snapshot, &proxy));
        let dump: serde_json::Value = serde_json::from_str(&rendered).unwrap();
        let outbound = dump["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == "virtualOutbound")
            .unwrap()
            .clone();
        let chain = outbound["defaultFilterChain"]["name"]
            .as_str()
            .unwrap()
            .to_string();
        let last_hosts: Vec<String> = dump["routes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let hosts = r["virtualHosts"].as_array().unwrap();
                hosts.last().unwrap()["name"].as_str().unwrap().to_string()
            })
            .collect();
        (chain, last_hosts)
    };
    let (chain, hosts) = unknown(false, "web");
    assert_eq!(chain, "PassthroughFilterChain");
    assert!(
        !hosts.is_empty() && hosts.iter().all(|h| h == "allow_any"),
        "{hosts:?}"
    );
    let (chain, hosts) = unknown(true, "web");
    assert_eq!(chain, "BlackHoleFilterChain");
    assert!(
        !hosts.is_empty() && hosts.iter().all(|h| h == "block_all"),
        "{hosts:?}"
    );
}

/// A Sidecar in the root namespace is the default of every namespace without its own, and
/// its `./*` means each proxy's own namespace (Istio's documented example).
#[test]
fn a_root_namespace_sidecar_scopes_every_namespace_to_itself() {
    let mesh = format!(
        "{MESH}---\napiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: default, namespace: istio-system}}\nspec: {{egress: [{{hosts: [\"./*\"]}}]}}\n"
    );
    let names = |namespace: &str| -> Vec<String> {
        let resources = generate(
            &snapshot(&mesh),
            &proxy_in(ProxyKind::Sidecar, namespace, &[]),
        );
        resources
            .clusters
            .iter()
            .map(|c| c.name.clone())
            .filter(|n| n.starts_with("outbound"))
            .collect()
    };
    assert_eq!(
        names("finance"),
        [
            "outbound|443||bank.example.com",
            "outbound|8080||billing.finance.svc.cluster.local"
        ]
    );
    assert_eq!(
        names("shop"),
        ["outbound|9080||reviews.shop.svc.cluster.local"],
        "shop's own Sidecar wins"
    );
}

/// `~NAMESPACE/host` takes out of the import what the other entries let in (Istio's
/// documented example: everything but one namespace and one host in every namespace).
#[test]
fn excluded_hosts_are_taken_out_of_what_a_sidecar_imports() {
    let with_sidecar = |hosts: &str| {
        format!(
            "{MESH}---\napiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: default, namespace: finance}}\nspec: {{egress: [{{hosts: {hosts}}}]}}\n"
        )
    };
    let names = |mesh: &str| -> Vec<String> {
        let resources = generate(
            &snapshot(mesh),
            &proxy_in(ProxyKind::Sidecar, "finance", &[]),
        );
        resources
            .clusters
            .iter()
            .map(|c| c.name.clone())
            .filter(|n| n.starts_with("outbound"))
            .collect()
    };
    assert_eq!(
        names(&with_sidecar(r#"["*/*", "~shop/*"]"#)),
        [
            "outbound|443||bank.example.com",
            "outbound|8080||billing.finance.svc.cluster.local"
        ]
    );
    assert_eq!(
        names(&with_sidecar(r#"["*/*", "~/bank.example.com"]"#)),
        [
            "outbound|8080||billing.finance.svc.cluster.local",
            "outbound|9080||reviews.shop.svc.cluster.local"
        ]
    );
    assert!(names(&with_sidecar(r#"["*/*", "~/*"]"#)).is_empty());
}

/// A DestinationRule with a workloadSelector applies to the workloads it selects alone, so
/// proxies of one namespace stop sharing their clusters once one exists.
#[test]
fn a_rule_selecting_workloads_sets_their_clusters_apart() {
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    let mesh = format!(
        "{MESH}---\n{}",
        r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: canary-pool, namespace: shop}
spec:
  host: reviews
  workloadSelector: {matchLabels: {track: canary}}
  trafficPolicy: {connectionPool: {tcp: {maxConnections: 7}}}
"#
    );
    let snapshot = snapshot(&mesh);
    let canary = proxy_in(
        ProxyKind::Sidecar,
        "shop",
        &[("app", "x"), ("track", "canary")],
    );
    let other = proxy_in(ProxyKind::Sidecar, "shop", &[("app", "x")]);
    assert_ne!(
        fleetmesh_xds::SharedKey::new(&snapshot, &canary),
        fleetmesh_xds::SharedKey::new(&snapshot, &other)
    );
    let max_connections = |proxy| {
        let resources = generate(&snapshot, proxy);
        let reviews = resources
            .clusters
            .iter()
            .find(|c| c.name == "outbound|9080||reviews.shop.svc.cluster.local")
            .expect("the reviews cluster");
        let cluster: Cluster = prost::Message::decode(reviews.resource.value.as_slice()).unwrap();
        cluster
            .circuit_breakers
            .and_then(|b| b.thresholds.first()?.max_connections)
            .map(|v| v.value)
    };
    assert_eq!(max_connections(&canary), Some(7));
    assert_eq!(max_connections(&other), None);
}
