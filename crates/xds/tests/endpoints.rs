//! Endpoints as EDS carries them to a proxy.

mod support;

use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use fleetmesh_xds::{ProxyKind, generate};
use prost::Message;
use support::{proxy_in, snapshot};

/// A STATIC ServiceEntry selecting a WorkloadEntry addressed by a hostname: EDS takes IP
/// addresses only, and one hostname would make Envoy reject the whole response (every
/// service's endpoints with it), so that endpoint is left out, as istiod leaves it out.
#[test]
fn a_workload_entry_addressed_by_hostname_is_left_out_of_eds() {
    let mesh = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: vms, namespace: shop}
spec:
  hosts: [vms.shop.internal]
  ports: [{number: 8080, name: http, protocol: HTTP}]
  resolution: STATIC
  location: MESH_INTERNAL
  workloadSelector: {labels: {app: vm}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: by-ip, namespace: shop}
spec: {address: 127.0.0.7, labels: {app: vm}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: by-name, namespace: shop}
spec: {address: vm.shop.internal, labels: {app: vm}}
"#;
    let resources = generate(&snapshot(mesh), &proxy_in(ProxyKind::Sidecar, "shop", &[]));
    let assignment = resources
        .endpoints
        .iter()
        .find(|e| e.name == "outbound|8080||vms.shop.internal")
        .expect("the service's endpoints");
    let assignment = ClusterLoadAssignment::decode(assignment.resource.value.as_slice()).unwrap();
    let endpoints: Vec<String> = assignment
        .endpoints
        .iter()
        .flat_map(|l| &l.lb_endpoints)
        .map(|e| format!("{:?}", e.host_identifier))
        .collect();
    assert_eq!(endpoints.len(), 1, "{endpoints:#?}");
    assert!(endpoints[0].contains("127.0.0.7"), "{endpoints:#?}");
}
