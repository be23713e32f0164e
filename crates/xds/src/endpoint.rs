//! EDS: the endpoints of every EDS cluster (not of PASSTHROUGH ones), filtered by subset
//! labels and grouped by locality.

use crate::NamedResource;
use crate::common::{socket_address, u32_value};
use crate::locality::LocalityPolicy;
use crate::names;
use crate::port_settings::PortSettings;
use crate::scope::Scope;
use crate::tls;
use envoy_types::pb::envoy::config::core::v3::{Locality, Metadata};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint as EnvoyEndpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::google::protobuf::Any;
use fleetmesh_api::security::MtlsMode;
use fleetmesh_model::security::{self, InboundMtls};
use fleetmesh_model::service::{Labels, Resolution, labels_match};
use fleetmesh_model::{Service, ServicePort};
use std::collections::BTreeMap;

pub fn build(scope: &Scope) -> Vec<NamedResource> {
    let mut assignments = Vec::new();
    for service in scope
        .services
        .iter()
        .filter(|s| s.resolution == Resolution::Static)
    {
        let rule = scope.snapshot.destination_rule(
            &service.hostname,
            &scope.proxy.namespace,
            &scope.proxy.labels,
        );
        let no_labels = Labels::new();
        let spec = rule.map(|r| &r.spec);
        let subsets = std::iter::once(("", &no_labels)).chain(
            spec.iter()
                .flat_map(|r| &r.subsets)
                .map(|s| (s.name.as_str(), &s.labels)),
        );
        let subsets: Vec<_> = subsets.collect();
        // Once per service, not per cluster: every subset and port reuses it.
        let mtls = sidecar_mtls(scope, service);
        for port in &service.ports {
            for (subset, labels) in &subsets {
                let name = names::outbound_cluster(port.port, subset, &service.hostname);
                let subset = (!subset.is_empty()).then_some(*subset);
                let settings = PortSettings::of_subset(spec, subset, port.port);
                if settings.passthrough() {
                    continue;
                }
                let mut cla = assignment(name, service, &mtls, port, labels);
                LocalityPolicy::of(&settings)
                    .apply(&mut cla.endpoints, scope.proxy.locality.as_deref());
                assignments.push(cla);
            }
        }
    }
    assignments
        .into_iter()
        .map(|a| NamedResource {
            name: a.cluster_name.clone(),
            resource: Any {
                type_url: <ClusterLoadAssignment as prost::Name>::type_url(),
                value: crate::sorted_map::encode_assignment(&a),
            },
        })
        .collect()
}

/// By endpoint of `service`: its effective PeerAuthentication if it runs a sidecar (Istio
/// marks those `security.istio.io/tlsMode: istio`), else `None` (plaintext).
fn sidecar_mtls(scope: &Scope, service: &Service) -> Vec<Option<InboundMtls>> {
    service
        .endpoints
        .iter()
        .map(|e| {
            tls::has_sidecar(e)
                .then(|| security::inbound_mtls(scope.snapshot, &service.namespace, &e.labels))
        })
        .collect()
}

/// Who the endpoint is, for metrics; and whether auto mTLS reaches it with mutual TLS
/// (unless its port is DISABLEd).
fn endpoint_metadata(
    service: &Service,
    endpoint: &fleetmesh_model::service::Endpoint,
    mtls: &Option<InboundMtls>,
    port: u32,
) -> Metadata {
    let mut metadata = crate::telemetry::endpoint_metadata(service, endpoint);
    if mtls
        .as_ref()
        .is_some_and(|m| m.mode(port) != MtlsMode::Disable)
    {
        metadata
            .filter_metadata
            .extend(tls::istio_endpoint_metadata().filter_metadata);
    }
    metadata
}

fn assignment(
    cluster_name: String,
    service: &Service,
    mtls: &[Option<InboundMtls>],
    port: &ServicePort,
    subset: &Labels,
) -> ClusterLoadAssignment {
    let mut by_locality: BTreeMap<&str, Vec<LbEndpoint>> = BTreeMap::new();
    for (endpoint, mtls) in service
        .endpoints
        .iter()
        .zip(mtls)
        .filter(|(e, _)| labels_match(subset, &e.labels))
    {
        let Some(endpoint_port) = endpoint.ports.get(&port.port) else {
            continue;
        };
        if endpoint.address.parse::<std::net::IpAddr>().is_err() {
            // EDS takes IP addresses only: one hostname (a WorkloadEntry selected by a
            // STATIC service) would make Envoy reject every assignment of the response,
            // so, as istiod does, such an endpoint is left out.
            continue;
        }
        by_locality
            .entry(endpoint.locality.as_deref().unwrap_or(""))
            .or_default()
            .push(LbEndpoint {
                host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(EnvoyEndpoint {
                    address: Some(socket_address(&endpoint.address, *endpoint_port)),
                    ..EnvoyEndpoint::default()
                })),
                load_balancing_weight: u32_value(endpoint.weight),
                metadata: Some(endpoint_metadata(service, endpoint, mtls, *endpoint_port)),
                ..LbEndpoint::default()
            });
    }
    let endpoints = by_locality
        .into_iter()
        .map(|(locality, lb_endpoints)| {
            let weight: u32 = lb_endpoints
                .iter()
                .filter_map(|e| e.load_balancing_weight.as_ref())
                .map(|w| w.value)
                .sum();
            let mut parts = locality.splitn(3, '/');
            LocalityLbEndpoints {
                locality: Some(Locality {
                    region: parts.next().unwrap_or("").to_string(),
                    zone: parts.next().unwrap_or("").to_string(),
                    sub_zone: parts.next().unwrap_or("").to_string(),
                }),
                load_balancing_weight: u32_value(weight),
                lb_endpoints,
                ..LocalityLbEndpoints::default()
            }
        })
        .collect();
    ClusterLoadAssignment {
        cluster_name,
        endpoints,
        ..ClusterLoadAssignment::default()
    }
}
