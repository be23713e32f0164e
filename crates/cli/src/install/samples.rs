//! The samples install writes beside the manifests: a small two-service app to label and
//! deploy, and the ingress gateway of the install guide (gateways are deployed by the
//! user, in a namespace of their own, never by install).

use fleetmesh_inject::Revision;

pub struct Sample {
    pub file: &'static str,
    pub yaml: String,
}

pub fn render(revision: &Revision, hub: &str) -> Vec<Sample> {
    vec![
        Sample {
            file: "samples/bookstore/bookstore.yaml",
            yaml: bookstore(revision, hub),
        },
        Sample {
            file: "samples/gateways/istio-ingressgateway.yaml",
            yaml: gateway(revision.name),
        },
        Sample {
            file: "samples/gateways/bookstore-gateway.yaml",
            yaml: BOOKSTORE_GATEWAY.into(),
        },
    ]
}

/// Two services of `fleetmesh sample-app` (the sample image `scripts/build-images`
/// builds), `reviews` in two versions split 80/20. Label the namespace first:
/// `kubectl label namespace NS istio-injection- istio.io/rev=REVISION --overwrite`.
fn bookstore(revision: &Revision, hub: &str) -> String {
    let image = fleetmesh_inject::channel::image(hub, "sample", revision.proxy_version);
    let mut yaml = String::new();
    for (service, version) in [("frontend", "v1"), ("reviews", "v1"), ("reviews", "v2")] {
        yaml.push_str(&format!(
            r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {service}-{version}
spec:
  selector:
    matchLabels: {{app: {service}, version: {version}}}
  template:
    metadata:
      labels: {{app: {service}, version: {version}}}
    spec:
      containers:
      - name: {service}
        image: {image}
        command: [fleetmesh, sample-app, --listen, "0.0.0.0:9080", --service, {service}, --version, {version}]
        ports: [{{name: http, containerPort: 9080}}]
        readinessProbe: {{httpGet: {{path: /, port: http}}}}
---
"#
        ));
    }
    for service in ["frontend", "reviews"] {
        yaml.push_str(&format!(
            r#"apiVersion: v1
kind: Service
metadata:
  name: {service}
spec:
  selector: {{app: {service}}}
  ports: [{{name: http, port: 9080}}]
---
"#
        ));
    }
    yaml.push_str(
        r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 80}
    - {destination: {host: reviews, subset: v2}, weight: 20}
"#,
    );
    yaml
}

/// The install guide's gateway: replace GATEWAY_NAMESPACE with a namespace of its own.
pub fn gateway(revision: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata:
  name: istio-ingressgateway
  namespace: GATEWAY_NAMESPACE
spec:
  type: LoadBalancer
  selector:
    istio: ingressgateway
  ports:
  - port: 80
    name: http
  - port: 443
    name: https
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: istio-ingressgateway
  namespace: GATEWAY_NAMESPACE
spec:
  selector:
    matchLabels:
      istio: ingressgateway
  template:
    metadata:
      annotations:
        # This is required to tell the mesh to inject the gateway with the
        # required configuration.
        inject.istio.io/templates: gateway
      labels:
        istio: ingressgateway
        istio.io/rev: {revision} # This is required only if the namespace is not labeled.
    spec:
      containers:
      - name: istio-proxy
        image: auto # The image will automatically update each time the pod starts.
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: istio-ingressgateway-sds
  namespace: GATEWAY_NAMESPACE
rules:
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "watch", "list"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: istio-ingressgateway-sds
  namespace: GATEWAY_NAMESPACE
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: istio-ingressgateway-sds
subjects:
- kind: ServiceAccount
  name: default
"#
    )
}

const BOOKSTORE_GATEWAY: &str = r#"# Routes the gateway's port 80 to the bookstore's frontend. Apply in the bookstore's
# namespace.
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: bookstore
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: bookstore
spec:
  hosts: ["*"]
  gateways: [bookstore]
  http:
  - route:
    - destination: {host: frontend, port: {number: 9080}}
"#;
