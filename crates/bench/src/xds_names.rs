//! What a sidecar must read from a response to subscribe like Envoy: the EDS names of its
//! clusters, the RDS names of its listeners, and the endpoint addresses of an EDS push.
//!
//! Envoy's full messages are large; these declare only the fields read (same tags as
//! Envoy's protos), so decoding skips the rest. Ten thousand simulated proxies decode every
//! push, on one core, and must not become what the benchmark measures.

use prost::Message;

const EDS: i32 = 3;
const HTTP_CONNECTION_MANAGER: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

#[derive(Clone, PartialEq, Message)]
struct Cluster {
    #[prost(string, tag = "1")]
    name: String,
    /// `type` (the oneof `cluster_discovery_type`).
    #[prost(int32, optional, tag = "2")]
    discovery_type: Option<i32>,
    #[prost(message, optional, tag = "3")]
    eds_cluster_config: Option<EdsClusterConfig>,
}

#[derive(Clone, PartialEq, Message)]
struct EdsClusterConfig {
    #[prost(string, tag = "2")]
    service_name: String,
}

#[derive(Clone, PartialEq, Message)]
struct Listener {
    #[prost(message, repeated, tag = "3")]
    filter_chains: Vec<FilterChain>,
    #[prost(message, optional, tag = "25")]
    default_filter_chain: Option<FilterChain>,
}

#[derive(Clone, PartialEq, Message)]
struct FilterChain {
    #[prost(message, repeated, tag = "3")]
    filters: Vec<Filter>,
}

#[derive(Clone, PartialEq, Message)]
struct Filter {
    #[prost(message, optional, tag = "4")]
    typed_config: Option<prost_types_any::Any>,
}

mod prost_types_any {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Any {
        #[prost(string, tag = "1")]
        pub type_url: String,
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
    }
}

#[derive(Clone, PartialEq, Message)]
struct HttpConnectionManager {
    #[prost(message, optional, tag = "3")]
    rds: Option<Rds>,
}

#[derive(Clone, PartialEq, Message)]
struct Rds {
    #[prost(string, tag = "2")]
    route_config_name: String,
}

#[derive(Clone, PartialEq, Message)]
struct ClusterLoadAssignment {
    #[prost(message, repeated, tag = "2")]
    endpoints: Vec<LocalityLbEndpoints>,
}

#[derive(Clone, PartialEq, Message)]
struct LocalityLbEndpoints {
    #[prost(message, repeated, tag = "2")]
    lb_endpoints: Vec<LbEndpoint>,
}

#[derive(Clone, PartialEq, Message)]
struct LbEndpoint {
    #[prost(message, optional, tag = "1")]
    endpoint: Option<Endpoint>,
}

#[derive(Clone, PartialEq, Message)]
struct Endpoint {
    #[prost(message, optional, tag = "1")]
    address: Option<Address>,
}

#[derive(Clone, PartialEq, Message)]
struct Address {
    #[prost(message, optional, tag = "1")]
    socket_address: Option<SocketAddress>,
}

#[derive(Clone, PartialEq, Message)]
struct SocketAddress {
    #[prost(string, tag = "2")]
    address: String,
}

/// The names Envoy would ask EDS for: each EDS cluster's `service_name`, else its name.
pub fn eds_names<'a>(clusters: impl Iterator<Item = &'a [u8]>) -> Vec<String> {
    let mut names: Vec<String> = clusters
        .filter_map(|bytes| Cluster::decode(bytes).ok())
        .filter(|c| c.discovery_type == Some(EDS))
        .map(|c| match c.eds_cluster_config {
            Some(eds) if !eds.service_name.is_empty() => eds.service_name,
            _ => c.name,
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The route configurations the listeners' HTTP connection managers load over RDS.
pub fn rds_names<'a>(listeners: impl Iterator<Item = &'a [u8]>) -> Vec<String> {
    let mut names = Vec::new();
    for listener in listeners.filter_map(|bytes| Listener::decode(bytes).ok()) {
        let chains = listener
            .filter_chains
            .iter()
            .chain(listener.default_filter_chain.as_ref());
        for filter in chains.flat_map(|chain| &chain.filters) {
            let Some(config) = &filter.typed_config else {
                continue;
            };
            if config.type_url != HTTP_CONNECTION_MANAGER {
                continue;
            }
            if let Ok(HttpConnectionManager { rds: Some(rds) }) =
                HttpConnectionManager::decode(config.value.as_slice())
            {
                names.push(rds.route_config_name);
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

#[derive(Clone, PartialEq, Message)]
struct VirtualHost {
    #[prost(message, repeated, tag = "3")]
    routes: Vec<Route>,
}

#[derive(Clone, PartialEq, Message)]
struct Route {
    /// `route` (the oneof `action`).
    #[prost(message, optional, tag = "2")]
    route: Option<RouteAction>,
}

#[derive(Clone, PartialEq, Message)]
struct RouteAction {
    #[prost(string, tag = "1")]
    cluster: String,
    #[prost(message, optional, tag = "3")]
    weighted_clusters: Option<WeightedCluster>,
}

#[derive(Clone, PartialEq, Message)]
struct WeightedCluster {
    #[prost(message, repeated, tag = "1")]
    clusters: Vec<ClusterWeight>,
}

#[derive(Clone, PartialEq, Message)]
struct ClusterWeight {
    #[prost(string, tag = "1")]
    name: String,
}

/// The clusters a virtual host's routes send to: what Envoy's on-demand CDS asks for
/// when a route is first used.
pub fn route_clusters(virtual_host: &[u8]) -> Vec<String> {
    let Ok(host) = VirtualHost::decode(virtual_host) else {
        return Vec::new();
    };
    let mut names: Vec<String> = host
        .routes
        .into_iter()
        .filter_map(|route| route.route)
        .flat_map(|action| {
            let weighted = action
                .weighted_clusters
                .into_iter()
                .flat_map(|w| w.clusters);
            std::iter::once(action.cluster)
                .chain(weighted.map(|c| c.name))
                .filter(|name| !name.is_empty())
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Every endpoint address in a set of ClusterLoadAssignments.
pub fn endpoint_addresses<'a>(assignments: impl Iterator<Item = &'a [u8]>) -> Vec<String> {
    assignments
        .filter_map(|bytes| ClusterLoadAssignment::decode(bytes).ok())
        .flat_map(|cla| cla.endpoints)
        .flat_map(|locality| locality.lb_endpoints)
        .filter_map(|lb| lb.endpoint?.address?.socket_address)
        .map(|socket| socket.address)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::cluster::v3 as cluster;
    use envoy_types::pb::envoy::config::core::v3 as core;
    use envoy_types::pb::envoy::config::endpoint::v3 as endpoint;
    use envoy_types::pb::envoy::config::listener::v3 as listener;
    use envoy_types::pb::envoy::config::route::v3 as route;
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
    use envoy_types::pb::google::protobuf::Any;

    #[test]
    fn reads_the_names_envoys_full_messages_carry() {
        let eds = cluster::Cluster {
            name: "outbound|80||a".into(),
            cluster_discovery_type: Some(cluster::cluster::ClusterDiscoveryType::Type(EDS)),
            eds_cluster_config: Some(cluster::cluster::EdsClusterConfig {
                service_name: "outbound|80||a.svc".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let eds_by_name = cluster::Cluster {
            name: "b".into(),
            cluster_discovery_type: Some(cluster::cluster::ClusterDiscoveryType::Type(EDS)),
            ..Default::default()
        };
        let static_cluster = cluster::Cluster {
            name: "static".into(),
            ..Default::default()
        };
        let clusters: Vec<Vec<u8>> = [eds, eds_by_name, static_cluster]
            .iter()
            .map(Message::encode_to_vec)
            .collect();
        assert_eq!(
            eds_names(clusters.iter().map(Vec::as_slice)),
            ["b", "outbound|80||a.svc"]
        );

        let manager = hcm::HttpConnectionManager {
            route_specifier: Some(hcm::http_connection_manager::RouteSpecifier::Rds(
                hcm::Rds {
                    route_config_name: "8080".into(),
                    ..Default::default()
                },
            )),
            ..Default::default()
        };
        let chain = listener::FilterChain {
            filters: vec![listener::Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(listener::filter::ConfigType::TypedConfig(Any {
                    type_url: HTTP_CONNECTION_MANAGER.into(),
                    value: manager.encode_to_vec(),
                })),
            }],
            ..Default::default()
        };
        let with_routes = listener::Listener {
            name: "0.0.0.0_8080".into(),
            filter_chains: vec![chain.clone()],
            default_filter_chain: Some(chain),
            ..Default::default()
        };
        let bytes = with_routes.encode_to_vec();
        assert_eq!(rds_names(std::iter::once(bytes.as_slice())), ["8080"]);

        let socket = |ip: &str| endpoint::LbEndpoint {
            host_identifier: Some(endpoint::lb_endpoint::HostIdentifier::Endpoint(
                endpoint::Endpoint {
                    address: Some(core::Address {
                        address: Some(core::address::Address::SocketAddress(core::SocketAddress {
                            address: ip.into(),
                            ..Default::default()
                        })),
                    }),
                    ..Default::default()
                },
            )),
            ..Default::default()
        };
        let assignment = endpoint::ClusterLoadAssignment {
            cluster_name: "a".into(),
            endpoints: vec![endpoint::LocalityLbEndpoints {
                lb_endpoints: vec![socket("198.18.0.1"), socket("198.18.0.2")],
                ..Default::default()
            }],
            ..Default::default()
        };
        let bytes = assignment.encode_to_vec();
        assert_eq!(
            endpoint_addresses(std::iter::once(bytes.as_slice())),
            ["198.18.0.1", "198.18.0.2"]
        );
    }

    #[test]
    fn reads_the_clusters_a_virtual_host_routes_to() {
        let to = |specifier| route::Route {
            action: Some(route::route::Action::Route(route::RouteAction {
                cluster_specifier: Some(specifier),
                ..Default::default()
            })),
            ..Default::default()
        };
        let weighted = route::WeightedCluster {
            clusters: ["v1", "v2"]
                .map(|name| route::weighted_cluster::ClusterWeight {
                    name: name.into(),
                    ..Default::default()
                })
                .into(),
            ..Default::default()
        };
        let host = route::VirtualHost {
            name: "a".into(),
            domains: vec!["a".into()],
            routes: vec![
                to(route::route_action::ClusterSpecifier::Cluster("v2".into())),
                to(route::route_action::ClusterSpecifier::WeightedClusters(
                    weighted,
                )),
                route::Route::default(),
            ],
            ..Default::default()
        };
        assert_eq!(route_clusters(&host.encode_to_vec()), ["v1", "v2"]);
    }
}
