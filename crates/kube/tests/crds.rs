//! Istio's CRDs, generated from our types: the checked-in manifest matches the generator,
//! and a real API server accepts them (structural schemas) and Istio's own YAML through them.

use fleetmesh_kube::crds::istio_crds_yaml;
use fleetmesh_kube::testing::{TestCluster, TestNamespace};

const MANIFEST: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../manifests/istio-crds.yaml"
);

#[test]
fn the_manifest_is_generated_from_the_types() {
    let generated = istio_crds_yaml();
    if std::env::var_os("UPDATE_MANIFESTS").is_some() {
        std::fs::write(MANIFEST, &generated).unwrap();
    }
    let checked_in = std::fs::read_to_string(MANIFEST).unwrap_or_default();
    assert!(
        checked_in == generated,
        "manifests/istio-crds.yaml is stale: run UPDATE_MANIFESTS=1 cargo test -p fleetmesh-kube --test crds and review the diff"
    );
}

/// Istio-style YAML, every version alias, as users write it.
const ISTIO_YAML: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}, uri: {prefix: /api}}]
    route: [{destination: {host: reviews, subset: v2, port: {number: 9080}}, weight: 100}]
    retries: {attempts: 3, perTryTimeout: 2s, retryOn: "5xx,connect-failure"}
    fault: {delay: {fixedDelay: 5s, percentage: {value: 10}}}
  - route: [{destination: {host: reviews, subset: v1}}]
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}, connectionPool: {tcp: {maxConnections: 100}}}
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata: {name: public}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api}
spec: {hosts: [api.example.com], ports: [{number: 443, name: tls, protocol: TLS}], resolution: DNS, location: MESH_EXTERNAL}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default}
spec: {egress: [{hosts: ["./*", "istio-system/*"]}]}
---
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {name: default}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews}
spec:
  selector: {matchLabels: {app: reviews}}
  action: DENY
  rules: [{to: [{operation: {paths: [/admin*]}}]}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt}
spec:
  jwtRules: [{issuer: "https://issuer.example", jwksUri: "https://issuer.example/jwks.json"}]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_accepts_the_crds_and_istio_yaml() {
    let cluster = TestCluster::start("fleetmesh-kube-tests").expect("the local cluster starts");
    cluster
        .install_istio_crds()
        .await
        .expect("the CRDs are structural and get established");
    let client = cluster.client().await.unwrap();
    let namespace = TestNamespace::create(&client, "crds").await.unwrap();
    namespace
        .apply(ISTIO_YAML)
        .await
        .expect("Istio YAML applies through our CRDs");
    let output = cluster
        .kubectl()
        .args([
            "get",
            "vs,dr,gw,se,sidecars,pa,ap,ra",
            "-n",
            &namespace.name,
            "-o",
            "name",
        ])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&output.stdout);
    for name in [
        "virtualservice.networking.istio.io/reviews",
        "destinationrule.networking.istio.io/reviews",
        "gateway.networking.istio.io/public",
        "serviceentry.networking.istio.io/api",
        "sidecar.networking.istio.io/default",
        "peerauthentication.security.istio.io/default",
        "authorizationpolicy.security.istio.io/reviews",
        "requestauthentication.security.istio.io/jwt",
    ] {
        assert!(
            listed.contains(name),
            "{name} not listed by its short name:\n{listed}"
        );
    }
    namespace.delete().await.unwrap();
}
