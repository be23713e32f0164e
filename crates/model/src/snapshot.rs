//! Building a [`Snapshot`] from config resources.

use crate::host::{ExportTo, host_matches, resolve_host};
use crate::service::{
    Endpoint, Labels, Protocol, Resolution, Service, ServicePort, Workload, labels_match, selects,
};
use fleetmesh_api::kube::{Endpoints, ServiceSpec, TargetPort};
use fleetmesh_api::networking::*;
use fleetmesh_api::resource::{Config, Resource};
use fleetmesh_api::security::{
    AuthorizationPolicySpec, PeerAuthenticationSpec, RequestAuthenticationSpec,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

/// Everything a snapshot is built from.
pub struct SnapshotInput<'a> {
    /// Istio and Kubernetes config, from every source.
    pub resources: Vec<&'a Resource>,
    /// Services a source resolved itself (a Kubernetes cluster's Services with their
    /// EndpointSlices and Pods).
    pub services: Vec<Service>,
    /// Workloads (Pods) a source knows, to match proxies against.
    pub workloads: Vec<Workload>,
    /// The cluster's DNS domain (`cluster.local`).
    pub domain: String,
    /// Mesh-wide settings.
    pub mesh: MeshSettings,
    /// The cluster the services and workloads come from (`local` in local mode).
    pub cluster_id: String,
    /// Gateway TLS credentials: the cluster's Secrets, by (namespace, Secret name).
    pub credentials: BTreeMap<(String, String), Arc<crate::Credential>>,
    /// What only the finished snapshot knows to ask for: who may read Secrets, and the
    /// keys behind `jwksUri`s.
    pub lookups: &'a dyn Lookups,
}

/// Answers a snapshot needs from outside, about things the snapshot itself names.
pub trait Lookups {
    /// Those of `wanted` (namespace, service account) that may read their namespace's
    /// Secrets, as far as known now.
    fn secret_readers(&self, wanted: BTreeSet<(String, String)>) -> BTreeSet<(String, String)>;
    /// The JWKS documents fetched so far for `uris`, by URI; each URI comes with the
    /// longest fetch timeout a rule naming it gives.
    fn jwks(&self, uris: BTreeMap<&str, Option<Duration>>) -> BTreeMap<String, String>;
}

/// No cluster and nothing fetched: config files alone.
pub struct NoLookups;

impl Lookups for NoLookups {
    fn secret_readers(&self, _: BTreeSet<(String, String)>) -> BTreeSet<(String, String)> {
        BTreeSet::new()
    }

    fn jwks(&self, _: BTreeMap<&str, Option<Duration>>) -> BTreeMap<String, String> {
        BTreeMap::new()
    }
}

/// Mesh-wide settings (Istio's MeshConfig, the fields meshd applies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshSettings {
    /// The namespace whose Sidecar and DestinationRules apply mesh-wide.
    pub root_namespace: String,
    /// The identity domain of the mesh's certificates.
    pub trust_domain: String,
    /// `outboundTrafficPolicy: REGISTRY_ONLY`: captured traffic to unknown destinations
    /// is dropped instead of passed through.
    pub registry_only: bool,
    /// Sidecars and gateways keep Istio's standard workload metrics (MeshConfig
    /// `defaultProviders.metrics` names `prometheus`, or is not given).
    pub workload_metrics: bool,
}

impl Default for MeshSettings {
    fn default() -> MeshSettings {
        MeshSettings {
            root_namespace: "istio-system".into(),
            trust_domain: crate::DEFAULT_DOMAIN.into(),
            registry_only: false,
            workload_metrics: true,
        }
    }
}

/// One mesh's state at one moment. Immutable; shared by `Arc` between readers.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The cluster's DNS domain (`cluster.local`).
    pub domain: String,
    /// Mesh-wide settings.
    pub mesh: MeshSettings,
    /// By hostname. Where two resources claim one host, the first by namespace/name wins.
    pub services: BTreeMap<String, Arc<Service>>,
    /// Each endpoint address's locality, indexed on first use (a proxy's own locality is
    /// its pod's endpoint's).
    pub(crate) endpoint_localities: std::sync::OnceLock<std::collections::HashMap<String, String>>,
    /// Ordered by namespace and name, as every list of config below.
    pub virtual_services: Vec<Arc<Config<VirtualServiceSpec>>>,
    /// Traffic policies by host.
    pub destination_rules: Vec<Arc<Config<DestinationRuleSpec>>>,
    /// Gateway servers, by the labels of the gateways they select.
    pub gateways: Vec<Arc<Config<GatewaySpec>>>,
    /// What proxies see and how they listen.
    pub sidecars: Vec<Arc<Config<SidecarSpec>>>,
    /// mTLS modes.
    pub peer_authentications: Vec<Arc<Config<PeerAuthenticationSpec>>>,
    /// ALLOW, DENY and AUDIT rules.
    pub authorization_policies: Vec<Arc<Config<AuthorizationPolicySpec>>>,
    /// JWT rules.
    pub request_authentications: Vec<Arc<Config<RequestAuthenticationSpec>>>,
    /// JWKS documents meshd fetched, by `jwksUri` (proxies never fetch keys themselves).
    pub jwks: BTreeMap<String, String>,
    /// By (namespace, name).
    pub workloads: BTreeMap<(String, String), Workload>,
    /// Gateway TLS credentials from the cluster's Secrets, by (namespace, Secret name).
    pub credentials: BTreeMap<(String, String), Arc<crate::Credential>>,
    /// The service accounts, as (namespace, name), that may read their namespace's
    /// Secrets (the cluster said so by SubjectAccessReview): only gateways running as one
    /// of them are served the credentials of their namespace.
    pub secret_readers: BTreeSet<(String, String)>,
}

impl Snapshot {
    /// A snapshot of config alone (no cluster), with the default domain and mesh
    /// settings: what a config file describes by itself.
    pub fn of_config(resources: Vec<&Resource>) -> Snapshot {
        Snapshot::build(SnapshotInput {
            services: Vec::new(),
            workloads: Vec::new(),
            resources,
            domain: crate::DEFAULT_DOMAIN.into(),
            mesh: MeshSettings::default(),
            cluster_id: "local".into(),
            credentials: BTreeMap::new(),
            lookups: &NoLookups,
        })
    }

    /// The (namespace, service account) of the workloads a Gateway with a
    /// `credentialName` server selects: whose right to read Secrets meshd must learn
    /// before it serves them credentials.
    fn credential_readers_wanted(&self) -> BTreeSet<(String, String)> {
        let selectors: Vec<&crate::service::Labels> = self
            .gateways
            .iter()
            .filter(|g| !g.spec.selector.is_empty())
            .filter(|g| {
                g.spec
                    .servers
                    .iter()
                    .any(|s| s.tls.as_ref().is_some_and(|t| t.credential_name.is_some()))
            })
            .map(|g| &g.spec.selector)
            .collect();
        self.workloads
            .values()
            .filter(|w| {
                selectors
                    .iter()
                    .any(|s| crate::service::labels_match(s, &w.labels))
            })
            .map(|w| {
                let account = w
                    .service_account
                    .clone()
                    .unwrap_or_else(|| "default".into());
                (w.namespace.clone(), account)
            })
            .collect()
    }

    /// Builds the snapshot of `input`, in a deterministic order: the same input always
    /// gives the same snapshot.
    pub fn build(input: SnapshotInput<'_>) -> Snapshot {
        let mut resources = input.resources;
        // Deterministic order: the same config always gives the same snapshot.
        resources.sort_by_key(|r| (r.kind(), r.meta().namespace.clone(), r.meta().name.clone()));

        let workloads: Vec<&Config<WorkloadEntrySpec>> = resources
            .iter()
            .filter_map(|r| {
                if let Resource::WorkloadEntry(w) = r {
                    Some(w)
                } else {
                    None
                }
            })
            .collect();
        let listed: Vec<&Endpoints> = resources
            .iter()
            .filter_map(|r| {
                if let Resource::Endpoints(e) = r {
                    Some(e)
                } else {
                    None
                }
            })
            .collect();
        let mut snapshot = Snapshot {
            domain: input.domain.clone(),
            mesh: input.mesh,
            workloads: input
                .workloads
                .into_iter()
                .map(|w| ((w.namespace.clone(), w.name.clone()), w))
                .collect(),
            ..Snapshot::default()
        };
        let mut add_service = |service: Service| {
            if snapshot.services.contains_key(&service.hostname) {
                tracing::warn!(host = %service.hostname, namespace = %service.namespace, "host already defined; keeping the first definition");
            } else {
                snapshot
                    .services
                    .insert(service.hostname.clone(), Arc::new(service));
            }
        };
        for service in input.services {
            add_service(service);
        }
        for resource in &resources {
            match resource {
                Resource::Service(s) => add_service(kube_service(
                    s,
                    &workloads,
                    &listed,
                    &input.domain,
                    &input.cluster_id,
                )),
                Resource::ServiceEntry(se) => {
                    for service in service_entry(se, &workloads, &input.cluster_id) {
                        add_service(service);
                    }
                }
                _ => {}
            }
        }
        for resource in resources {
            match resource {
                Resource::VirtualService(c) => snapshot.virtual_services.push(Arc::new(c.clone())),
                Resource::DestinationRule(c) => {
                    snapshot.destination_rules.push(Arc::new(c.clone()))
                }
                Resource::Gateway(c) => snapshot.gateways.push(Arc::new(c.clone())),
                Resource::Sidecar(c) => snapshot.sidecars.push(Arc::new(c.clone())),
                Resource::PeerAuthentication(c) => {
                    snapshot.peer_authentications.push(Arc::new(c.clone()))
                }
                Resource::AuthorizationPolicy(c) => {
                    snapshot.authorization_policies.push(Arc::new(c.clone()))
                }
                Resource::RequestAuthentication(c) => {
                    snapshot.request_authentications.push(Arc::new(c.clone()))
                }
                _ => {}
            }
        }
        snapshot.credentials = input.credentials;
        snapshot.secret_readers = input
            .lookups
            .secret_readers(snapshot.credential_readers_wanted());
        let mut uris: BTreeMap<&str, Option<Duration>> = BTreeMap::new();
        for rule in snapshot
            .request_authentications
            .iter()
            .flat_map(|r| &r.spec.jwt_rules)
        {
            if let Some(uri) = rule.jwks_uri.as_deref() {
                let timeout = uris.entry(uri).or_default();
                *timeout = (*timeout).max(rule.timeout.map(|t| t.as_std()));
            }
        }
        snapshot.jwks = input.lookups.jwks(uris);
        snapshot
    }

    /// The locality (`region/zone/subzone`) of the endpoint at `address`, if a service has
    /// one there with a known locality.
    pub fn locality_of(&self, address: &str) -> Option<&str> {
        let index = self.endpoint_localities.get_or_init(|| {
            let mut index = std::collections::HashMap::new();
            for endpoint in self.services.values().flat_map(|s| &s.endpoints) {
                if let Some(locality) = &endpoint.locality {
                    index
                        .entry(endpoint.address.clone())
                        .or_insert_with(|| locality.clone());
                }
            }
            index
        });
        index.get(address).map(String::as_str)
    }

    /// The DestinationRule that applies to `host` for a proxy in `proxy_namespace` with
    /// `proxy_labels`: Istio looks in the proxy's namespace (a rule whose
    /// `workloadSelector` selects the proxy first), then the service's, then the root
    /// namespace. A rule with a selector applies only in its own namespace.
    pub fn destination_rule(
        &self,
        host: &str,
        proxy_namespace: &str,
        proxy_labels: &Labels,
    ) -> Option<&Config<DestinationRuleSpec>> {
        let service_namespace = self.services.get(host).map(|s| s.namespace.as_str());
        let candidates = [
            Some(proxy_namespace),
            service_namespace,
            Some(self.mesh.root_namespace.as_str()),
        ];
        candidates.into_iter().flatten().find_map(|namespace| {
            let for_host = || {
                self.destination_rules
                    .iter()
                    .filter(move |dr| dr.metadata.namespace == namespace)
                    .filter(move |dr| {
                        ExportTo::parse(&dr.spec.export_to, namespace).visible_to(proxy_namespace)
                    })
                    .filter(move |dr| {
                        host_matches(&resolve_host(&dr.spec.host, namespace, &self.domain), host)
                    })
            };
            let selecting = for_host().find(|dr| {
                dr.spec.workload_selector.as_ref().is_some_and(|s| {
                    namespace == proxy_namespace && labels_match(&s.match_labels, proxy_labels)
                })
            });
            selecting
                .or_else(|| for_host().find(|dr| dr.spec.workload_selector.is_none()))
                .map(|dr| dr.as_ref())
        })
    }
}

fn kube_service(
    s: &Config<ServiceSpec>,
    workloads: &[&Config<WorkloadEntrySpec>],
    listed: &[&Endpoints],
    domain: &str,
    cluster: &str,
) -> Service {
    let namespace = &s.metadata.namespace;
    let ports: Vec<ServicePort> = s
        .spec
        .ports
        .iter()
        .map(|p| {
            let numeric_target = match &p.target_port {
                Some(TargetPort::Number(n)) => Some(*n),
                _ => None,
            };
            ServicePort::kube(
                p.name.as_deref(),
                p.port,
                numeric_target,
                p.app_protocol.as_deref(),
            )
        })
        .collect();
    let named_targets: BTreeMap<u32, &str> = s
        .spec
        .ports
        .iter()
        .filter_map(|p| match &p.target_port {
            Some(TargetPort::Name(name)) => Some((p.port, name.as_str())),
            _ => None,
        })
        .collect();
    let endpoints = if s.spec.selector.is_empty() {
        // Without a selector, the Endpoints object of the same name lists them.
        listed
            .iter()
            .filter(|e| e.metadata.namespace == *namespace && e.metadata.name == s.metadata.name)
            .flat_map(|e| listed_endpoints(e, &ports, cluster))
            .collect()
    } else {
        workloads
            .iter()
            .filter(|w| {
                &w.metadata.namespace == namespace && selects(&s.spec.selector, &w.spec.labels)
            })
            .map(|w| {
                let name = Some(w.metadata.name.as_str());
                endpoint(&w.spec, name, &ports, &named_targets, cluster)
            })
            .collect()
    };
    Service {
        hostname: crate::host::service_hostname(&s.metadata.name, namespace, domain),
        namespace: namespace.clone(),
        addresses: s
            .spec
            .cluster_ip
            .as_deref()
            .and_then(crate::service::virtual_ip)
            .into_iter()
            .collect(),
        ports,
        endpoints,
        export_to: ExportTo::All,
        selector: s.spec.selector.clone(),
        resolution: Resolution::Static,
        mesh_external: false,
        subject_alt_names: Vec::new(),
        address_ranges: Vec::new(),
    }
}

/// The ready addresses of an Endpoints object; its ports match the service's by name
/// (or stand alone when both have one port).
fn listed_endpoints(listed: &Endpoints, ports: &[ServicePort], cluster: &str) -> Vec<Endpoint> {
    let mut endpoints = Vec::new();
    for subset in &listed.subsets {
        let port_map: BTreeMap<u32, u32> = ports
            .iter()
            .filter_map(|p| {
                let by_name = subset
                    .ports
                    .iter()
                    .find(|sp| sp.name.as_deref().unwrap_or("") == p.name);
                let only = (ports.len() == 1 && subset.ports.len() == 1).then(|| &subset.ports[0]);
                Some((p.port, by_name.or(only)?.port))
            })
            .collect();
        for address in &subset.addresses {
            endpoints.push(Endpoint {
                address: address.ip.clone(),
                ports: port_map.clone(),
                labels: Labels::new(),
                locality: None,
                weight: 1,
                service_account: None,
                cluster_id: cluster.to_string(),
                workload: None,
            });
        }
    }
    endpoints
}

fn service_entry(
    se: &Config<ServiceEntrySpec>,
    workloads: &[&Config<WorkloadEntrySpec>],
    cluster: &str,
) -> Vec<Service> {
    let namespace = &se.metadata.namespace;
    let ports: Vec<ServicePort> = se
        .spec
        .ports
        .iter()
        .map(|p| ServicePort {
            name: p.name.clone(),
            port: p.number,
            protocol: Protocol::detect(p.protocol.as_deref(), &p.name),
            target_port: p.target_port.unwrap_or(p.number),
        })
        .collect();
    let no_named = BTreeMap::new();
    // Each with the WorkloadEntry's name; inline endpoints have none.
    let selected: Vec<(Option<&str>, &WorkloadEntrySpec)> = match &se.spec.workload_selector {
        Some(selector) => workloads
            .iter()
            .filter(|w| {
                &w.metadata.namespace == namespace && selects(&selector.labels, &w.spec.labels)
            })
            .map(|w| (Some(w.metadata.name.as_str()), &w.spec))
            .collect(),
        None => se.spec.endpoints.iter().map(|w| (None, w)).collect(),
    };
    let endpoints: Vec<Endpoint> = selected
        .into_iter()
        .map(|(name, w)| endpoint(w, name, &ports, &no_named, cluster))
        .collect();
    let resolution = match se
        .spec
        .resolution
        .unwrap_or(fleetmesh_api::networking::Resolution::None)
    {
        fleetmesh_api::networking::Resolution::Static => Resolution::Static,
        fleetmesh_api::networking::Resolution::Dns
        | fleetmesh_api::networking::Resolution::DnsRoundRobin => Resolution::Dns,
        fleetmesh_api::networking::Resolution::None => Resolution::Passthrough,
    };
    se.spec
        .hosts
        .iter()
        .map(|host| Service {
            hostname: host.clone(),
            namespace: namespace.clone(),
            addresses: se
                .spec
                .addresses
                .iter()
                .filter_map(|a| crate::service::virtual_ip(a))
                .collect(),
            address_ranges: se
                .spec
                .addresses
                .iter()
                .filter_map(|a| crate::service::address_range(a))
                .collect(),
            ports: ports.clone(),
            endpoints: if resolution == Resolution::Dns && endpoints.is_empty() {
                // DNS without endpoints: Envoy resolves the host itself.
                vec![Endpoint {
                    address: host.clone(),
                    ports: ports.iter().map(|p| (p.port, p.target_port)).collect(),
                    labels: Labels::new(),
                    locality: None,
                    weight: 1,
                    service_account: None,
                    cluster_id: cluster.to_string(),
                    workload: None,
                }]
            } else {
                endpoints.clone()
            },
            export_to: ExportTo::parse(&se.spec.export_to, namespace),
            selector: Labels::new(),
            resolution,
            mesh_external: se.spec.location != Some(Location::MeshInternal),
            subject_alt_names: se.spec.subject_alt_names.clone(),
        })
        .collect()
}

fn endpoint(
    w: &WorkloadEntrySpec,
    name: Option<&str>,
    ports: &[ServicePort],
    named_targets: &BTreeMap<u32, &str>,
    cluster: &str,
) -> Endpoint {
    let ports = ports
        .iter()
        .filter_map(|p| {
            // A WorkloadEntry's `ports` maps a service port name to its own port; a named
            // targetPort must be found there, else the endpoint does not serve that port.
            let by_service_port_name = w.ports.get(&p.name).copied();
            let target = match named_targets.get(&p.port) {
                Some(name) => w.ports.get(*name).copied(),
                None => Some(p.target_port),
            };
            by_service_port_name.or(target).map(|port| (p.port, port))
        })
        .collect();
    Endpoint {
        address: w.address.clone(),
        ports,
        labels: w.labels.clone(),
        locality: w.locality.clone(),
        weight: w.weight.unwrap_or(1),
        service_account: w.service_account.clone(),
        cluster_id: cluster.to_string(),
        workload: name.map(str::to_string),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetmesh_api::load_documents;

    fn build(yaml: &str) -> Snapshot {
        let loaded = load_documents(None, yaml).unwrap();
        Snapshot::build(SnapshotInput {
            services: Vec::new(),
            workloads: Vec::new(),
            resources: loaded.iter().map(|l| &l.resource).collect(),
            domain: "cluster.local".into(),
            mesh: MeshSettings::default(),
            cluster_id: "local".into(),
            credentials: BTreeMap::new(),
            lookups: &NoLookups,
        })
    }

    /// Lets everyone read Secrets and knows one key set.
    struct Everything;

    impl Lookups for Everything {
        fn secret_readers(&self, wanted: BTreeSet<(String, String)>) -> BTreeSet<(String, String)> {
            wanted
        }

        fn jwks(&self, uris: BTreeMap<&str, Option<Duration>>) -> BTreeMap<String, String> {
            uris.into_keys()
                .filter(|u| *u == "https://issuer.example/keys")
                .map(|u| (u.to_string(), "{\"keys\":[]}".to_string()))
                .collect()
        }
    }

    #[test]
    fn what_the_snapshot_names_is_looked_up() {
        let yaml = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge, namespace: gw}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: ["*"], tls: {mode: SIMPLE, credentialName: cert}}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: gw}
spec:
  jwtRules: [{issuer: https://issuer.example, jwksUri: https://issuer.example/keys}, {issuer: https://other.example, jwksUri: https://other.example/keys}]
"#;
        let loaded = load_documents(None, yaml).unwrap();
        let gateway = Workload {
            namespace: "gw".into(),
            name: "ingress".into(),
            ip: None,
            labels: [("istio".to_string(), "ingressgateway".to_string())].into(),
            service_account: Some("ingress".into()),
        };
        let snapshot = Snapshot::build(SnapshotInput {
            services: Vec::new(),
            workloads: vec![gateway],
            resources: loaded.iter().map(|l| &l.resource).collect(),
            domain: "cluster.local".into(),
            mesh: MeshSettings::default(),
            cluster_id: "local".into(),
            credentials: BTreeMap::new(),
            lookups: &Everything,
        });
        assert_eq!(
            snapshot.secret_readers,
            [("gw".to_string(), "ingress".to_string())].into()
        );
        assert_eq!(
            snapshot.jwks.keys().collect::<Vec<_>>(),
            ["https://issuer.example/keys"]
        );
    }

    const MESH: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}, {name: admin, port: 9090, targetPort: mgmt}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v1, namespace: shop}
spec: {address: 127.10.0.2, labels: {app: reviews, version: v1}, ports: {mgmt: 19090}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v2, namespace: shop}
spec: {address: 127.10.0.3, labels: {app: reviews, version: v2}, weight: 3}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: elsewhere, namespace: other}
spec: {address: 127.10.0.4, labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: external, namespace: shop}
spec:
  hosts: [api.example.com]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: DNS
  exportTo: ["."]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec: {host: reviews, subsets: [{name: v1, labels: {version: v1}}]}
"#;

    #[test]
    fn services_select_workloads_in_their_namespace() {
        let snapshot = build(MESH);
        let reviews = &snapshot.services["reviews.shop.svc.cluster.local"];
        let addresses: Vec<_> = reviews
            .endpoints
            .iter()
            .map(|e| e.address.as_str())
            .collect();
        assert_eq!(addresses, ["127.10.0.2", "127.10.0.3"]);
        // A named targetPort resolves through the WorkloadEntry's ports; without it the
        // endpoint does not serve that port.
        assert_eq!(
            reviews.endpoints[0].ports,
            BTreeMap::from([(9080, 9080), (9090, 19090)])
        );
        assert_eq!(reviews.endpoints[1].ports, BTreeMap::from([(9080, 9080)]));
        assert_eq!(reviews.endpoints[1].weight, 3);
        assert_eq!(reviews.ports[0].protocol, Protocol::Http);
    }

    #[test]
    fn services_without_selector_take_their_endpoints_object() {
        let snapshot = build(
            r#"
apiVersion: v1
kind: Service
metadata: {name: legacy, namespace: shop}
spec: {ports: [{name: http, port: 80, targetPort: 8080}]}
---
apiVersion: v1
kind: Endpoints
metadata: {name: legacy, namespace: shop}
subsets:
- addresses: [{ip: 127.10.0.7}, {ip: 127.10.0.8}]
  notReadyAddresses: [{ip: 127.10.0.9}]
  ports: [{name: http, port: 8080}]
"#,
        );
        let legacy = &snapshot.services["legacy.shop.svc.cluster.local"];
        let addresses: Vec<_> = legacy
            .endpoints
            .iter()
            .map(|e| e.address.as_str())
            .collect();
        assert_eq!(
            addresses,
            ["127.10.0.7", "127.10.0.8"],
            "ready addresses only"
        );
        assert_eq!(legacy.endpoints[0].ports, BTreeMap::from([(80, 8080)]));
    }

    #[test]
    fn service_entries_and_export_to() {
        let snapshot = build(MESH);
        let external = &snapshot.services["api.example.com"];
        assert_eq!(external.resolution, Resolution::Dns);
        assert_eq!(external.endpoints[0].address, "api.example.com");
        assert!(external.export_to.visible_to("shop"));
        assert!(!external.export_to.visible_to("other"));
        assert_eq!(external.ports[0].protocol, Protocol::Tls);
    }

    #[test]
    fn a_rule_selecting_workloads_applies_to_them_alone() {
        let yaml = format!(
            "{MESH}---\n{}",
            r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: for-canaries, namespace: shop}
spec:
  host: reviews
  workloadSelector: {matchLabels: {track: canary}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: for-canaries-elsewhere, namespace: other}
spec:
  host: reviews.shop.svc.cluster.local
  workloadSelector: {matchLabels: {track: canary}}
"#
        );
        let snapshot = build(&yaml);
        let host = "reviews.shop.svc.cluster.local";
        let canary: Labels = [("track".to_string(), "canary".to_string())].into();
        let rule = |namespace: &str, labels: &Labels| {
            snapshot
                .destination_rule(host, namespace, labels)
                .map(|r| r.metadata.name.clone())
        };
        assert_eq!(rule("shop", &canary).as_deref(), Some("for-canaries"));
        // Others in shop, and canaries of another namespace whose own rule selects them
        // not (it is in "other"; they are in "third"), get the namespace-wide rule.
        assert_eq!(rule("shop", &Labels::new()).as_deref(), Some("reviews"));
        assert_eq!(rule("third", &canary).as_deref(), Some("reviews"));
        assert_eq!(
            rule("other", &canary).as_deref(),
            Some("for-canaries-elsewhere")
        );
    }

    #[test]
    fn destination_rule_lookup_order() {
        let snapshot = build(MESH);
        let host = "reviews.shop.svc.cluster.local";
        assert_eq!(
            snapshot
                .destination_rule(host, "other", &Labels::new())
                .unwrap()
                .metadata
                .name,
            "reviews"
        );
        assert!(
            snapshot
                .destination_rule("ratings.shop.svc.cluster.local", "shop", &Labels::new())
                .is_none()
        );
    }
}
