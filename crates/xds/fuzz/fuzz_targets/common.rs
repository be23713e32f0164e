#![allow(dead_code)] // each target uses a part of it

//! What the targets do with a node: read it as meshd reads a proxy's, and build that
//! proxy's config from a mesh, encoding every resource as it would be sent.

use envoy_types::pb::envoy::config::core::v3::Node;
use fleetmesh_model::Snapshot;
use fleetmesh_xds::Proxy;
use std::sync::OnceLock;

/// Services, routes, a gateway and policies for the proxy to be matched against.
const MESH: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  ports: [{number: 9080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.10, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  http: [{route: [{destination: {host: reviews.default.svc.cluster.local, subset: v1}}]}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews.default.svc.cluster.local
  subsets: [{name: v1, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: shop, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
"#;

fn mesh() -> &'static Snapshot {
    static MESH_SNAPSHOT: OnceLock<Snapshot> = OnceLock::new();
    MESH_SNAPSHOT.get_or_init(|| {
        let loaded = fleetmesh_api::load_documents(None, MESH).expect("the fuzz mesh is valid");
        Snapshot::of_config(loaded.iter().map(|l| &l.resource).collect())
    })
}

/// Reads `node` as meshd does and, if it is a proxy, generates and encodes its config
/// from a small mesh.
pub fn serve(node: &Node) {
    serve_from(mesh(), node);
}

/// As [`serve`], from `snapshot`.
pub fn serve_from(snapshot: &Snapshot, node: &Node) {
    let Ok(proxy) = Proxy::from_node(node) else {
        return;
    };
    let _ = proxy.config_key();
    let proxy = proxy.resolved(snapshot);
    let resources = fleetmesh_xds::generate(snapshot, &proxy);
    for resource in resources
        .clusters
        .iter()
        .chain(&resources.endpoints)
        .chain(&resources.listeners)
        .chain(&resources.routes)
        .chain(&resources.secrets)
    {
        let _ = prost::Message::encoded_len(&resource.resource);
    }
}
