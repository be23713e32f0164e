//! Make-before-break, checked at the protocol level: an Envoy-like client applies every
//! response in order, as Envoy does, and after each one no route may point at a cluster
//! that is missing or has not received its endpoints. Both ADS protocols.

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, route, route_action};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use envoy_types::pb::google::protobuf::Any;
use fleetmesh_server::MeshState;
use fleetmesh_xds::{CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE};
use prost::Message;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

mod common;

use common::{TestServer, node, snapshot};

fn frontend() -> fleetmesh_ca::Identity {
    fleetmesh_ca::Identity::new("default", "default")
}

const BEFORE: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v1}
spec: {address: 127.0.0.11, labels: {app: reviews, version: v1}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v2}
spec: {address: 127.0.0.12, labels: {app: reviews, version: v2}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec: {host: reviews, subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec: {hosts: [reviews], http: [{route: [{destination: {host: reviews, subset: v1}}]}]}
"#;

/// The subsets renamed and the route moved to a new one, in one change.
fn after() -> String {
    BEFORE
        .replace(
            "[{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]",
            "[{name: blue, labels: {version: v1}}, {name: green, labels: {version: v2}}]",
        )
        .replace("subset: v1", "subset: green")
}

/// What Envoy holds, updated response by response.
#[derive(Default)]
struct EnvoyModel {
    clusters: BTreeMap<String, Cluster>,
    /// Clusters that got a load assignment with endpoints since they were (re)defined.
    warm: BTreeSet<String>,
    routes: BTreeMap<String, RouteConfiguration>,
    applied: usize,
}

impl EnvoyModel {
    fn apply(&mut self, type_url: &str, resources: &[Any], removed: &[String], replace_all: bool) {
        match type_url {
            CLUSTER_TYPE => {
                let incoming: Vec<Cluster> = resources
                    .iter()
                    .map(|a| Cluster::decode(a.value.as_slice()).unwrap())
                    .collect();
                if replace_all {
                    let names: BTreeSet<_> = incoming.iter().map(|c| c.name.clone()).collect();
                    self.clusters.retain(|n, _| names.contains(n));
                }
                for name in removed {
                    self.clusters.remove(name);
                }
                for cluster in incoming {
                    // A new or changed cluster warms again.
                    if self.clusters.get(&cluster.name) != Some(&cluster) {
                        self.warm.remove(&cluster.name);
                    }
                    self.clusters.insert(cluster.name.clone(), cluster);
                }
            }
            ENDPOINT_TYPE => {
                for any in resources {
                    let cla = ClusterLoadAssignment::decode(any.value.as_slice()).unwrap();
                    let has_endpoints = cla.endpoints.iter().any(|l| !l.lb_endpoints.is_empty());
                    if self.clusters.contains_key(&cla.cluster_name) && has_endpoints {
                        self.warm.insert(cla.cluster_name.clone());
                    }
                }
            }
            ROUTE_TYPE => {
                for any in resources {
                    let rc = RouteConfiguration::decode(any.value.as_slice()).unwrap();
                    self.routes.insert(rc.name.clone(), rc);
                }
            }
            _ => {}
        }
        self.applied += 1;
        self.check();
    }

    /// Every cluster a route uses exists and is warm.
    fn check(&self) {
        for name in self.route_clusters() {
            assert!(
                self.clusters.contains_key(&name),
                "response {}: a route uses missing cluster {name}",
                self.applied
            );
            assert!(
                self.warm.contains(&name),
                "response {}: a route uses cluster {name} before its endpoints",
                self.applied
            );
        }
    }

    fn route_clusters(&self) -> Vec<String> {
        let actions = self
            .routes
            .values()
            .flat_map(|rc| &rc.virtual_hosts)
            .flat_map(|vh| &vh.routes)
            .filter_map(|r| match &r.action {
                Some(route::Action::Route(action)) => Some(action),
                _ => None,
            });
        actions
            .flat_map(|action| match &action.cluster_specifier {
                Some(route_action::ClusterSpecifier::Cluster(c)) => vec![c.clone()],
                Some(route_action::ClusterSpecifier::WeightedClusters(w)) => {
                    w.clusters.iter().map(|c| c.name.clone()).collect()
                }
                _ => vec![],
            })
            .collect()
    }

    fn routes_to(&self, subset: &str) -> bool {
        self.route_clusters()
            .iter()
            .any(|c| c.starts_with(&format!("outbound|9080|{subset}|")))
    }

    fn eds_clusters(&self) -> BTreeSet<String> {
        self.clusters
            .values()
            .filter(|c| c.eds_cluster_config.is_some())
            .map(|c| c.name.clone())
            .collect()
    }
}

/// The next response; once the first config has settled (quiet for a while), publishes the
/// change once, then returns `None` when that has settled too.
async fn next<T>(
    responses: &mut tonic::Streaming<T>,
    envoy: &EnvoyModel,
    snapshots: &watch::Sender<Arc<MeshState>>,
    changed: &mut bool,
) -> Option<T> {
    loop {
        match tokio::time::timeout(Duration::from_millis(500), responses.message()).await {
            Ok(Ok(Some(response))) => return Some(response),
            Ok(other) => panic!("stream ended: {:?}", other.err()),
            Err(_) if !*changed => {
                assert!(
                    envoy.routes_to("v1"),
                    "the first config settled on subset v1"
                );
                snapshots.send_replace(snapshot(&after()));
                *changed = true;
            }
            Err(_) => return None,
        }
    }
}

#[tokio::test]
async fn sotw_never_routes_to_a_missing_or_cold_cluster() {
    let server = TestServer::start(BEFORE).await;
    let (address, snapshots, shutdown) = (server.address, &server.snapshots, &server.shutdown);
    let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{address}"))
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(16);
    let request =
        |type_url: &str, names: Vec<String>, version: &str, nonce: &str| DiscoveryRequest {
            node: Some(node()),
            type_url: type_url.into(),
            resource_names: names,
            version_info: version.into(),
            response_nonce: nonce.into(),
            ..DiscoveryRequest::default()
        };
    tx.send(request(CLUSTER_TYPE, vec![], "", ""))
        .await
        .unwrap();
    let mut responses = client
        .stream_aggregated_resources(server.authorized(ReceiverStream::new(rx), &frontend()))
        .await
        .unwrap()
        .into_inner();
    let mut envoy = EnvoyModel::default();
    let mut subscribed: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut changed = false;
    while let Some(response) = next(&mut responses, &envoy, snapshots, &mut changed).await {
        envoy.apply(
            &response.type_url,
            &response.resources,
            &[],
            response.type_url == CLUSTER_TYPE,
        );
        let names = subscribed
            .get(&response.type_url)
            .cloned()
            .unwrap_or_default();
        tx.send(request(
            &response.type_url,
            names,
            &response.version_info,
            &response.nonce,
        ))
        .await
        .unwrap();
        // Subscribe as Envoy does: EDS for the EDS clusters, LDS after CDS, RDS after LDS.
        if response.type_url == CLUSTER_TYPE {
            let eds: Vec<String> = envoy.eds_clusters().into_iter().collect();
            if subscribed.get(ENDPOINT_TYPE) != Some(&eds) {
                subscribed.insert(ENDPOINT_TYPE.into(), eds.clone());
                tx.send(request(ENDPOINT_TYPE, eds, "", "")).await.unwrap();
            }
            if !subscribed.contains_key(LISTENER_TYPE) {
                subscribed.insert(LISTENER_TYPE.into(), vec![]);
                tx.send(request(LISTENER_TYPE, vec![], "", ""))
                    .await
                    .unwrap();
            }
        }
        if response.type_url == LISTENER_TYPE && !subscribed.contains_key(ROUTE_TYPE) {
            subscribed.insert(ROUTE_TYPE.into(), vec!["http_proxy".into()]);
            tx.send(request(ROUTE_TYPE, vec!["http_proxy".into()], "", ""))
                .await
                .unwrap();
        }
    }
    assert!(changed && envoy.routes_to("green"), "moved to green");
    assert!(
        !envoy
            .clusters
            .contains_key("outbound|9080|v1|reviews.default.svc.cluster.local"),
        "the old cluster is removed in the end"
    );
    shutdown.cancel();
}

#[tokio::test]
async fn delta_never_routes_to_a_missing_or_cold_cluster() {
    let server = TestServer::start(BEFORE).await;
    let (address, snapshots, shutdown) = (server.address, &server.snapshots, &server.shutdown);
    let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{address}"))
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(16);
    let request = |type_url: &str, subscribe: Vec<String>, nonce: &str| DeltaDiscoveryRequest {
        node: Some(node()),
        type_url: type_url.into(),
        resource_names_subscribe: subscribe,
        response_nonce: nonce.into(),
        ..DeltaDiscoveryRequest::default()
    };
    tx.send(request(CLUSTER_TYPE, vec![], "")).await.unwrap();
    let mut responses = client
        .delta_aggregated_resources(server.authorized(ReceiverStream::new(rx), &frontend()))
        .await
        .unwrap()
        .into_inner();
    let mut envoy = EnvoyModel::default();
    let mut eds_subscribed = BTreeSet::new();
    let mut listeners_requested = false;
    let mut routes_requested = false;
    let mut changed = false;
    while let Some(response) = next(&mut responses, &envoy, snapshots, &mut changed).await {
        let resources: Vec<Any> = response
            .resources
            .iter()
            .filter_map(|r| r.resource.clone())
            .collect();
        envoy.apply(
            &response.type_url,
            &resources,
            &response.removed_resources,
            false,
        );
        tx.send(request(&response.type_url, vec![], &response.nonce))
            .await
            .unwrap();
        if response.type_url == CLUSTER_TYPE {
            let new: Vec<String> = envoy
                .eds_clusters()
                .difference(&eds_subscribed)
                .cloned()
                .collect();
            if !new.is_empty() {
                eds_subscribed.extend(new.iter().cloned());
                tx.send(request(ENDPOINT_TYPE, new, "")).await.unwrap();
            }
            if !listeners_requested {
                listeners_requested = true;
                tx.send(request(LISTENER_TYPE, vec![], "")).await.unwrap();
            }
        }
        if response.type_url == LISTENER_TYPE && !routes_requested {
            routes_requested = true;
            tx.send(request(ROUTE_TYPE, vec!["http_proxy".into()], ""))
                .await
                .unwrap();
        }
    }
    assert!(changed && envoy.routes_to("green"), "moved to green");
    assert!(
        !envoy
            .clusters
            .contains_key("outbound|9080|v1|reviews.default.svc.cluster.local"),
        "the old cluster is removed in the end"
    );
    shutdown.cancel();
}
