//! What a sidecar that fetches its outbound config on demand is sent, on the golden mesh:
//! route configs without virtual hosts (VHDS), each virtual host apart, and the clusters
//! of HTTP ports apart from those TCP and TLS connections need. (Real Envoy takes it:
//! `e2e/tests/on_demand.rs`, and the routing and real-node suites in this mode.)

mod support;

use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use fleetmesh_xds::{Interception, ProxyKind, ProxyResources, generate};
use support::{proxy_in, snapshot};

fn captured(on_demand: bool) -> ProxyResources {
    let snapshot = snapshot(include_str!("golden/mesh.yaml"));
    let mut proxy = proxy_in(ProxyKind::Sidecar, "shop", &[("app", "reviews")]);
    proxy.interception = Interception::Redirect;
    proxy.on_demand = on_demand;
    generate(&snapshot, &proxy)
}

fn route_configs(resources: &[fleetmesh_xds::NamedResource]) -> Vec<RouteConfiguration> {
    let decode = |r: &fleetmesh_xds::NamedResource| prost::Message::decode(&*r.resource.value);
    resources.iter().map(|r| decode(r).unwrap()).collect()
}

fn names(resources: &[fleetmesh_xds::NamedResource]) -> Vec<&str> {
    resources.iter().map(|r| r.name.as_str()).collect()
}

#[test]
fn route_configs_carry_no_virtual_host_and_each_is_its_own_resource() {
    let full = captured(false);
    let on_demand = captured(true);
    assert_eq!(names(&full.routes), names(&on_demand.routes));
    for config in route_configs(&on_demand.routes) {
        assert!(config.virtual_hosts.is_empty(), "{}", config.name);
        assert!(config.vhds.is_some(), "{}", config.name);
    }
    let hosts = names(&on_demand.virtual_hosts);
    assert!(
        hosts.contains(&"9080/reviews.shop.svc.cluster.local:9080"),
        "{hosts:?}"
    );
    assert!(
        hosts.contains(&"9080/*"),
        "the unknown-hosts template: {hosts:?}"
    );
    let held: usize = route_configs(&full.routes)
        .iter()
        .map(|config| config.virtual_hosts.len())
        .sum();
    assert_eq!(hosts.len(), held, "every virtual host, apart");
    assert!(full.virtual_hosts.is_empty());
}

#[test]
fn clusters_of_http_ports_are_fetched_the_others_sent() {
    let full = captured(false);
    let on_demand = captured(true);
    let sent = names(&on_demand.clusters);
    let asked = names(&on_demand.on_demand_clusters);
    assert!(asked.contains(&"outbound|9080||reviews.shop.svc.cluster.local"));
    assert!(
        asked.contains(&"outbound|9090||ratings.shop.svc.cluster.local"),
        "gRPC is HTTP"
    );
    assert!(
        sent.contains(&"outbound|9091||reviews.shop.svc.cluster.local"),
        "TCP"
    );
    assert!(
        sent.contains(&"outbound|7000||ledger.shop.svc.cluster.local"),
        "TCP"
    );
    assert!(sent.contains(&"PassthroughCluster"), "{sent:?}");
    let mut both: Vec<&str> = sent.iter().chain(&asked).copied().collect();
    both.sort();
    let mut all = names(&full.clusters);
    all.sort();
    assert_eq!(both, all, "nothing lost, nothing added");
    assert!(full.on_demand_clusters.is_empty());
}
