//! What one proxy can see: services (exportTo, Sidecar egress hosts), its own Sidecar
//! resource, the VirtualServices that apply to it.

use crate::proxy::{Interception, Proxy, ProxyKind};
use fleetmesh_api::networking::{SidecarSpec, VirtualServiceSpec};
use fleetmesh_api::resource::Config;
use fleetmesh_model::host::{ExportTo, host_matches, resolve_host};
use fleetmesh_model::service::{labels_match, selects};
use fleetmesh_model::{Service, Snapshot};
use std::sync::Arc;

/// What one proxy may see of a snapshot: the services its Sidecar (or the defaults) make
/// visible, and the Sidecar resource that applies to it.
pub struct Scope<'a> {
    /// The snapshot being translated.
    pub snapshot: &'a Snapshot,
    /// The proxy it is translated for.
    pub proxy: &'a Proxy,
    /// The Sidecar resource selecting the proxy, else its namespace's, else the root
    /// namespace's.
    pub sidecar: Option<&'a Config<SidecarSpec>>,
    /// Visible services, by hostname order.
    pub services: Vec<&'a Arc<Service>>,
    /// The visible VirtualServices bound to the mesh, with their hosts resolved, in
    /// order: looked up once per service port, so resolved once.
    mesh_virtual_services: std::sync::OnceLock<Vec<HostsOf<'a>>>,
}

/// A VirtualService with its hosts resolved.
type HostsOf<'a> = (Vec<String>, &'a Arc<Config<VirtualServiceSpec>>);

impl<'a> Scope<'a> {
    /// The scope of `proxy` in `snapshot`.
    pub fn new(snapshot: &'a Snapshot, proxy: &'a Proxy) -> Scope<'a> {
        let sidecar = match proxy.kind {
            ProxyKind::Sidecar => find_sidecar(snapshot, proxy),
            ProxyKind::Router => None,
        };
        let services = snapshot
            .services
            .values()
            .filter(|s| s.export_to.visible_to(&proxy.namespace))
            .filter(|s| sidecar.is_none_or(|sc| egress_allows(sc, &proxy.namespace, s)))
            .collect();
        Scope {
            snapshot,
            proxy,
            sidecar,
            services,
            mesh_virtual_services: std::sync::OnceLock::new(),
        }
    }

    /// Whether traffic to destinations outside the registry is dropped: the proxy's
    /// Sidecar decides, else the mesh's `outboundTrafficPolicy`.
    pub fn registry_only(&self) -> bool {
        let sidecar_mode = self
            .sidecar
            .and_then(|s| s.spec.outbound_traffic_policy.as_ref())
            .and_then(|p| p.mode.as_deref());
        match sidecar_mode {
            Some(mode) => mode == "REGISTRY_ONLY",
            None => self.snapshot.mesh.registry_only,
        }
    }

    /// The ports of the visible services that speak HTTP.
    pub fn http_ports(&self) -> std::collections::BTreeSet<u32> {
        self.services
            .iter()
            .flat_map(|s| {
                s.ports
                    .iter()
                    .filter(|p| p.protocol.is_http())
                    .map(|p| p.port)
            })
            .collect()
    }

    /// The visible service of host name `host`.
    pub fn service(&self, host: &str) -> Option<&'a Arc<Service>> {
        self.services.iter().find(|s| s.hostname == host).copied()
    }

    /// Hosts of a VirtualService, fully qualified in its namespace.
    pub fn vs_hosts(&self, vs: &Config<VirtualServiceSpec>) -> Vec<String> {
        vs.spec
            .hosts
            .iter()
            .map(|h| resolve_host(h, &vs.metadata.namespace, &self.snapshot.domain))
            .collect()
    }

    /// VirtualServices visible to this proxy that are bound to `gateway`
    /// (`mesh` for sidecars, `namespace/name` for a Gateway).
    pub fn virtual_services(
        &self,
        gateway: &str,
    ) -> impl Iterator<Item = &'a Arc<Config<VirtualServiceSpec>>> {
        let proxy_ns = self.proxy.namespace.clone();
        let gateway = gateway.to_string();
        self.snapshot.virtual_services.iter().filter(move |vs| {
            let ns = &vs.metadata.namespace;
            ExportTo::parse(&vs.spec.export_to, ns).visible_to(&proxy_ns)
                && binds(&vs.spec.gateways, ns, &gateway)
        })
    }

    /// The first VirtualService (by namespace/name) with http routes for `host`, bound to
    /// `gateway` (one with only tcp or tls routes says nothing about HTTP).
    pub fn http_virtual_service_for(
        &self,
        host: &str,
        gateway: &str,
    ) -> Option<&'a Arc<Config<VirtualServiceSpec>>> {
        if gateway == "mesh" {
            let bound = self.mesh_virtual_services.get_or_init(|| {
                self.virtual_services("mesh")
                    .filter(|vs| !vs.spec.http.is_empty())
                    .map(|vs| (self.vs_hosts(vs), vs))
                    .collect()
            });
            return bound
                .iter()
                .find(|(hosts, _)| hosts.iter().any(|h| host_matches(h, host)))
                .map(|(_, vs)| *vs);
        }
        self.virtual_services(gateway)
            .filter(|vs| !vs.spec.http.is_empty())
            .find(|vs| self.vs_hosts(vs).iter().any(|h| host_matches(h, host)))
    }

    /// Services in the proxy's namespace that select it: what its inbound side serves.
    pub fn own_services(&self) -> impl Iterator<Item = &'a Arc<Service>> {
        let proxy = self.proxy;
        self.snapshot
            .services
            .values()
            .filter(move |s| s.namespace == proxy.namespace && selects(&s.selector, &proxy.labels))
    }
}

/// A Gateway server as a gateway proxy serves it: its Gateway (`namespace/name`) and the
/// hosts it accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayServer {
    pub gateway: String,
    pub hosts: Vec<String>,
}

impl GatewayServer {
    /// Whether the server takes `host` (a name or a wildcard, either side).
    pub fn accepts(&self, host: &str) -> bool {
        self.hosts
            .iter()
            .any(|h| host_matches(h, host) || host_matches(host, h))
    }
}

/// Everything the shared part of a proxy's resources ([`crate::generate_shared`]) depends
/// on: proxies with equal keys get identical outbound clusters, endpoints and routes,
/// whatever their labels and service accounts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SharedKey {
    kind: ProxyKind,
    namespace: String,
    interception: Interception,
    on_demand: bool,
    dns_capture: bool,
    /// The Sidecar resource that scopes it (namespace, name): it may select by labels.
    sidecar: Option<(String, String)>,
    /// Its labels, only while some VirtualService matches on source labels or some
    /// DestinationRule selects workloads.
    labels: Option<std::collections::BTreeMap<String, String>>,
    /// Its locality, only while some DestinationRule balances by locality.
    locality: Option<Option<String>>,
}

impl SharedKey {
    /// The key of `proxy`'s shared part in `snapshot`.
    pub fn new(snapshot: &Snapshot, proxy: &Proxy) -> SharedKey {
        let sidecar = match proxy.kind {
            ProxyKind::Sidecar => find_sidecar(snapshot, proxy),
            ProxyKind::Router => None,
        };
        let matches_source_labels = snapshot.virtual_services.iter().any(|vs| {
            let spec = &vs.spec;
            spec.http
                .iter()
                .flat_map(|r| &r.matches)
                .any(|m| !m.source_labels.is_empty())
                || spec
                    .tcp
                    .iter()
                    .flat_map(|r| &r.matches)
                    .any(|m| !m.source_labels.is_empty())
                || spec
                    .tls
                    .iter()
                    .flat_map(|r| &r.matches)
                    .any(|m| !m.source_labels.is_empty())
        });
        SharedKey {
            kind: proxy.kind,
            namespace: proxy.namespace.clone(),
            interception: proxy.interception,
            on_demand: proxy.on_demand,
            dns_capture: proxy.dns_capture,
            sidecar: sidecar.map(|s| (s.metadata.namespace.clone(), s.metadata.name.clone())),
            labels: (matches_source_labels || selects_workloads(snapshot))
                .then(|| proxy.labels.clone()),
            locality: crate::locality::snapshot_uses_locality(snapshot)
                .then(|| proxy.locality.clone()),
        }
    }
}

/// Whether a DestinationRule applies only to workloads it selects (so a proxy's rules
/// depend on its labels).
fn selects_workloads(snapshot: &Snapshot) -> bool {
    snapshot
        .destination_rules
        .iter()
        .any(|dr| dr.spec.workload_selector.is_some())
}

/// Whether a VirtualService with `gateways` (in namespace `ns`) applies to `gateway`.
pub fn binds(gateways: &[String], ns: &str, gateway: &str) -> bool {
    if gateways.is_empty() {
        return gateway == "mesh";
    }
    gateways.iter().any(|g| {
        if g == "mesh" {
            gateway == "mesh"
        } else if g.contains('/') {
            g == gateway
        } else {
            format!("{ns}/{g}") == gateway
        }
    })
}

/// Istio's choice: a Sidecar in the proxy's namespace selecting it, else one in its
/// namespace without selector, else the root namespace's default.
fn find_sidecar<'a>(snapshot: &'a Snapshot, proxy: &'a Proxy) -> Option<&'a Config<SidecarSpec>> {
    let in_namespace = |ns: &'a str| {
        snapshot
            .sidecars
            .iter()
            .filter(move |s| s.metadata.namespace == ns)
    };
    in_namespace(&proxy.namespace)
        .find(|s| {
            s.spec
                .workload_selector
                .as_ref()
                .is_some_and(|w| labels_match(&w.labels, &proxy.labels))
        })
        .or_else(|| in_namespace(&proxy.namespace).find(|s| s.spec.workload_selector.is_none()))
        .or_else(|| {
            in_namespace(&snapshot.mesh.root_namespace).find(|s| s.spec.workload_selector.is_none())
        })
        .map(|s| s.as_ref())
}

/// Whether `sidecar`'s egress hosts let a proxy in `proxy_namespace` see `service`. `.`
/// is the proxy's namespace: for a Sidecar of its own namespace that is the same thing,
/// and a root-namespace default applies it to every namespace, as Istio does. An entry
/// whose namespace starts with `~` excludes what it matches (`~/host`: in every
/// namespace; so `~/*` imports nothing), whatever the other entries import.
fn egress_allows(sidecar: &Config<SidecarSpec>, proxy_namespace: &str, service: &Service) -> bool {
    if sidecar.spec.egress.is_empty() {
        return true;
    }
    let in_namespace = |ns: &str| match ns {
        "*" | "" => true,
        "." => service.namespace == proxy_namespace,
        other => service.namespace == other,
    };
    let mut imported = false;
    for entry in sidecar.spec.egress.iter().flat_map(|e| &e.hosts) {
        let (ns, dns) = entry.split_once('/').unwrap_or(("*", entry));
        let matches = |ns: &str| in_namespace(ns) && host_matches(dns, &service.hostname);
        match ns.strip_prefix('~') {
            Some(excluded) if matches(excluded) => return false,
            Some(_) => {}
            None => imported |= matches(ns),
        }
    }
    imported
}
