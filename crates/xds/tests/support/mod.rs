//! Helpers for the xds test binaries: a snapshot from YAML, a proxy, JSON rendering, and
//! validation by a real Envoy.

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use envoy_types::pb::envoy::config::bootstrap::v3::bootstrap::StaticResources;
use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::{Listener, filter};
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::RouteSpecifier,
};
use fleetmesh_model::Snapshot;
use fleetmesh_xds::{Interception, Proxy, ProxyKind, ProxyResources, json::any_to_json};
use prost::Message;

pub fn snapshot(yaml: &str) -> Snapshot {
    let loaded = fleetmesh_api::load_documents(None, yaml)
        .unwrap_or_else(|e| panic!("fixture is invalid: {e:?}"));
    Snapshot::of_config(loaded.iter().map(|l| &l.resource).collect())
}

pub fn proxy_in(kind: ProxyKind, namespace: &str, labels: &[(&str, &str)]) -> Proxy {
    Proxy {
        id: "sidecar~127.10.0.1~frontend-0.shop~shop.svc.cluster.local".into(),
        kind,
        ips: vec!["127.10.0.1".into()],
        pod_name: "frontend-0".into(),
        namespace: namespace.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        service_account: "frontend".into(),
        istio_version: "1.28.0".into(),
        cluster_id: "local".into(),
        mesh_id: "cluster.local".into(),
        interception: Interception::None,
        on_demand: false,
        dns_capture: false,
        locality: None,
    }
}

pub fn render(resources: &ProxyResources) -> String {
    let list = |items: &[fleetmesh_xds::NamedResource]| {
        items
            .iter()
            .map(|r| any_to_json(&r.resource))
            .collect::<Vec<_>>()
    };
    let value = serde_json::json!({
        "clusters": list(&resources.clusters),
        "endpoints": list(&resources.endpoints),
        "listeners": list(&resources.listeners),
        "routes": list(&resources.routes),
    });
    serde_json::to_string_pretty(&value).unwrap() + "\n"
}

/// Inlines EDS and RDS into a static bootstrap and runs `envoy --mode validate` on it.
pub fn envoy_validate(name: &str, resources: &ProxyResources) {
    let endpoints: Vec<ClusterLoadAssignment> = resources
        .endpoints
        .iter()
        .map(|r| decode(&r.resource.value))
        .collect();
    let routes: Vec<RouteConfiguration> = resources
        .routes
        .iter()
        .map(|r| decode(&r.resource.value))
        .collect();
    let clusters: Vec<Cluster> = resources
        .clusters
        .iter()
        .map(|r| {
            let mut c: Cluster = decode(&r.resource.value);
            if c.eds_cluster_config.take().is_some() {
                c.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::Type(
                    cluster::DiscoveryType::Static as i32,
                ));
                c.load_assignment = endpoints.iter().find(|e| e.cluster_name == c.name).cloned();
            }
            c
        })
        .collect();
    let listeners: Vec<Listener> = resources
        .listeners
        .iter()
        .map(|r| {
            let mut l: Listener = decode(&r.resource.value);
            for chain in &mut l.filter_chains {
                let managers = chain
                    .filters
                    .iter_mut()
                    .filter(|f| f.name == "envoy.filters.network.http_connection_manager");
                for f in managers {
                    let Some(filter::ConfigType::TypedConfig(any)) = &mut f.config_type else {
                        continue;
                    };
                    let mut hcm: HttpConnectionManager = decode(&any.value);
                    if let Some(RouteSpecifier::Rds(rds)) = &hcm.route_specifier {
                        let route = routes
                            .iter()
                            .find(|r| r.name == rds.route_config_name)
                            .cloned()
                            .expect("RDS name exists");
                        hcm.route_specifier = Some(RouteSpecifier::RouteConfig(route));
                    }
                    any.value = hcm.encode_to_vec();
                }
            }
            l
        })
        .collect();
    // The agent's real bootstrap (node, `sds-grpc`, ...) with the resources made static.
    let mut bootstrap = fleetmesh_agent::bootstrap::build(
        &fleetmesh_agent::BootstrapConfig {
            identity: fleetmesh_agent::WorkloadIdentity {
                kind: "sidecar".into(),
                pod_name: name.into(),
                namespace: "default".into(),
                ip: "127.0.0.1".into(),
                other_ips: Vec::new(),
                labels: Default::default(),
                service_account: "default".into(),
                cluster_id: "local".into(),
                mesh_id: "cluster.local".into(),
                interception_mode: "NONE".into(),
                istio_version: "test".into(),
            },
            xds_mode: fleetmesh_agent::XdsMode::Sotw,
            xds_socket: "/tmp/fleetmesh-validation-xds.sock".into(),
            sds_socket: "/tmp/fleetmesh-validation-sds.sock".into(),
        },
        std::path::Path::new("/tmp/fleetmesh-validation-admin.sock"),
    );
    bootstrap.dynamic_resources = None;
    let statics = bootstrap
        .static_resources
        .get_or_insert_with(StaticResources::default);
    statics.clusters.extend(clusters);
    statics.listeners.extend(listeners);
    let dir = std::env::temp_dir().join(format!("fleetmesh-golden-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bootstrap.pb");
    std::fs::write(&path, bootstrap.encode_to_vec()).unwrap();
    assert_envoy_accepts(name, &path);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `envoy --mode validate` on the bootstrap at `path`.
fn assert_envoy_accepts(name: &str, path: &std::path::Path) {
    let envoy = fleetmesh_agent::envoy::locate(None).unwrap_or_else(|e| panic!("{e}"));
    let output = std::process::Command::new(envoy)
        .args(["--mode", "validate", "--disable-hot-restart", "-c"])
        .arg(path)
        .output()
        .unwrap();
    // Envoy 1.40 in validate mode segfaults on its way out once it has checked a config
    // whose stats loggers share one scope (`sharing_name`, as the workload metrics'
    // do), after saying the config is OK; serving the same config exits cleanly. So a
    // config is taken when Envoy said so, whatever the exit.
    let stdout = String::from_utf8_lossy(&output.stdout);
    let accepted = stdout
        .lines()
        .any(|line| line.starts_with("configuration '") && line.ends_with("' OK"));
    assert!(
        output.status.success() || accepted,
        "Envoy rejects the {name} config:\n{}{}",
        stdout,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Where the TCP proxy that is `chain`'s first filter sends connections (its cluster).
pub fn tcp_proxy_cluster(
    chain: &envoy_types::pb::envoy::config::listener::v3::FilterChain,
) -> Option<String> {
    use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
        TcpProxy, tcp_proxy,
    };
    let Some(filter::ConfigType::TypedConfig(any)) = &chain.filters.first()?.config_type else {
        return None;
    };
    match TcpProxy::decode(any.value.as_slice())
        .ok()?
        .cluster_specifier
    {
        Some(tcp_proxy::ClusterSpecifier::Cluster(cluster)) => Some(cluster),
        _ => None,
    }
}

fn decode<M: Message + Default>(bytes: &[u8]) -> M {
    M::decode(bytes).unwrap()
}
