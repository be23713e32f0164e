//! Translation: (snapshot, proxy) → Envoy v3 resources. A pure function, golden-tested.
//!
//! Resources carry istiod's names (`outbound|9080|v1|reviews.default.svc.cluster.local`,
//! `virtualOutbound`, `inbound|9080||`, route configs by port) so Istio's agent, istioctl
//! and dashboards recognise what meshd serves.

#![warn(missing_docs)]

mod authz;
mod cluster;
mod common;
mod credentials;
mod endpoint;
pub mod json;
mod jwt;
mod listener;
mod locality;
pub mod name_table;
pub mod names;
mod on_demand;
mod port_settings;
mod proxy;
pub(crate) mod route;
mod scope;
mod sorted_map;
pub mod telemetry;
pub mod tls;

pub use proxy::{ConfigKey, Interception, NodeError, Proxy, ProxyKind};
pub use scope::{Scope, SharedKey};

use envoy_types::pb::google::protobuf::Any;
use fleetmesh_model::Snapshot;

/// Envoy's type URL of clusters (CDS).
pub const CLUSTER_TYPE: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
/// Envoy's type URL of endpoints (EDS).
pub const ENDPOINT_TYPE: &str =
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
/// Envoy's type URL of listeners (LDS).
pub const LISTENER_TYPE: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
/// Envoy's type URL of route configurations (RDS).
pub const ROUTE_TYPE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
/// Envoy's type URL of virtual hosts (VHDS: an on-demand sidecar's routes).
pub const VIRTUAL_HOST_TYPE: &str = "type.googleapis.com/envoy.config.route.v3.VirtualHost";
/// Envoy's type URL of secrets (SDS; gateways' credentials over ADS).
pub const SECRET_TYPE: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// A kind of resource meshd serves over ADS. Declared in push order, so sorting by it
/// (or a `BTreeMap` keyed by it) goes in that order too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceType {
    /// Clusters (CDS).
    Cluster,
    /// Clusters an on-demand sidecar is sent only when it asks for them by name (Envoy's
    /// on-demand CDS): clusters on the wire, never a subscription of their own.
    OnDemandCluster,
    /// Endpoints (EDS).
    Endpoint,
    /// Gateway credentials (SDS over ADS).
    Secret,
    /// Listeners (LDS).
    Listener,
    /// Route configurations (RDS).
    Route,
    /// Virtual hosts of route configurations, fetched on demand (VHDS; delta only).
    VirtualHost,
    /// The name table Istio's agent answers DNS from (NDS; see [`name_table`]).
    NameTable,
}

impl ResourceType {
    /// The order Envoy warms resources in, and the order pushes go out in: clusters
    /// before the routes that use them (make-before-break), a gateway's certificates
    /// before the listeners that serve them.
    pub const PUSH_ORDER: [ResourceType; 8] = [
        ResourceType::Cluster,
        ResourceType::OnDemandCluster,
        ResourceType::Endpoint,
        ResourceType::Secret,
        ResourceType::Listener,
        ResourceType::Route,
        ResourceType::VirtualHost,
        ResourceType::NameTable,
    ];

    /// The type URL a proxy asks for it by.
    pub fn type_url(self) -> &'static str {
        match self {
            ResourceType::Cluster | ResourceType::OnDemandCluster => CLUSTER_TYPE,
            ResourceType::Endpoint => ENDPOINT_TYPE,
            ResourceType::Secret => SECRET_TYPE,
            ResourceType::Listener => LISTENER_TYPE,
            ResourceType::Route => ROUTE_TYPE,
            ResourceType::VirtualHost => VIRTUAL_HOST_TYPE,
            ResourceType::NameTable => name_table::NAME_TABLE_TYPE,
        }
    }

    /// The type a proxy asked for, if meshd serves it (clusters are [`ResourceType::Cluster`]).
    pub fn from_type_url(type_url: &str) -> Option<ResourceType> {
        ResourceType::PUSH_ORDER
            .into_iter()
            .find(|t| t.type_url() == type_url)
    }

    /// Its short name, as istiod's metrics and debug pages label it (`cds`, `eds`, ...).
    pub fn short_name(self) -> &'static str {
        match self {
            ResourceType::Cluster => "cds",
            ResourceType::OnDemandCluster => "odcds",
            ResourceType::Endpoint => "eds",
            ResourceType::Secret => "sds",
            ResourceType::Listener => "lds",
            ResourceType::Route => "rds",
            ResourceType::VirtualHost => "vhds",
            ResourceType::NameTable => "nds",
        }
    }

    /// Whether a proxy names the resources of this type it wants (EDS, RDS, SDS, VHDS,
    /// on-demand CDS); the other types it takes whole (a wildcard subscription).
    pub fn asked_by_name(self) -> bool {
        match self {
            ResourceType::Endpoint
            | ResourceType::Route
            | ResourceType::Secret
            | ResourceType::VirtualHost
            | ResourceType::OnDemandCluster => true,
            ResourceType::Cluster | ResourceType::Listener | ResourceType::NameTable => false,
        }
    }
}

/// One named Envoy resource, packed.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedResource {
    /// The name proxies ask for it by.
    pub name: String,
    /// The resource, packed.
    pub resource: Any,
}

/// Everything one proxy should have, by type.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProxyResources {
    /// Clusters (CDS).
    pub clusters: Vec<NamedResource>,
    /// An on-demand sidecar's clusters it asks for when a route first uses them.
    pub on_demand_clusters: Vec<NamedResource>,
    /// Endpoints (EDS).
    pub endpoints: Vec<NamedResource>,
    /// Listeners (LDS).
    pub listeners: Vec<NamedResource>,
    /// Route configurations (RDS).
    pub routes: Vec<NamedResource>,
    /// Gateway TLS credentials (secrets `kubernetes://<name>`).
    pub secrets: Vec<NamedResource>,
    /// An on-demand sidecar's virtual hosts (`CONFIG/HOST:PORT`).
    pub virtual_hosts: Vec<NamedResource>,
    /// The DNS name table of a sidecar with DNS capture (one resource, or none).
    pub name_tables: Vec<NamedResource>,
}

impl ProxyResources {
    /// The resources of `kind`.
    pub fn of_type(&self, kind: ResourceType) -> &[NamedResource] {
        match kind {
            ResourceType::Cluster => &self.clusters,
            ResourceType::OnDemandCluster => &self.on_demand_clusters,
            ResourceType::Endpoint => &self.endpoints,
            ResourceType::Listener => &self.listeners,
            ResourceType::Route => &self.routes,
            ResourceType::Secret => &self.secrets,
            ResourceType::VirtualHost => &self.virtual_hosts,
            ResourceType::NameTable => &self.name_tables,
        }
    }

    /// The resources of `kind`, taken out.
    pub fn take(&mut self, kind: ResourceType) -> Vec<NamedResource> {
        std::mem::take(match kind {
            ResourceType::Cluster => &mut self.clusters,
            ResourceType::OnDemandCluster => &mut self.on_demand_clusters,
            ResourceType::Endpoint => &mut self.endpoints,
            ResourceType::Listener => &mut self.listeners,
            ResourceType::Route => &mut self.routes,
            ResourceType::Secret => &mut self.secrets,
            ResourceType::VirtualHost => &mut self.virtual_hosts,
            ResourceType::NameTable => &mut self.name_tables,
        })
    }
}

/// Computes every resource `proxy` should receive from `snapshot`.
pub fn generate(snapshot: &Snapshot, proxy: &Proxy) -> ProxyResources {
    let shared = generate_shared(snapshot, proxy);
    let own = generate_own(snapshot, proxy);
    ProxyResources {
        clusters: [shared.clusters, own.clusters].concat(),
        on_demand_clusters: [shared.on_demand_clusters, own.on_demand_clusters].concat(),
        endpoints: [shared.endpoints, own.endpoints].concat(),
        listeners: [shared.listeners, own.listeners].concat(),
        routes: [shared.routes, own.routes].concat(),
        secrets: [shared.secrets, own.secrets].concat(),
        virtual_hosts: [shared.virtual_hosts, own.virtual_hosts].concat(),
        name_tables: [shared.name_tables, own.name_tables].concat(),
    }
}

/// The part of a proxy's resources that depends only on its [`SharedKey`]: the outbound
/// clusters, the endpoints, a sidecar's routes and its DNS name table. In a large mesh
/// this is nearly all of it, and every proxy of a namespace shares one copy.
pub fn generate_shared(snapshot: &Snapshot, proxy: &Proxy) -> ProxyResources {
    let scope = Scope::new(snapshot, proxy);
    ProxyResources {
        endpoints: endpoint::build(&scope),
        name_tables: name_table::build(&scope),
        ..outbound_clusters(&scope, shared_routes(&scope))
    }
}

/// `resources` with the outbound clusters of `scope`: those an on-demand sidecar asks
/// for apart.
fn outbound_clusters(scope: &Scope, resources: ProxyResources) -> ProxyResources {
    let clusters = cluster::outbound_clusters(scope);
    let (clusters, on_demand_clusters) = if scope.proxy.on_demand {
        on_demand::split_clusters(scope, clusters)
    } else {
        (clusters, Vec::new())
    };
    ProxyResources {
        clusters,
        on_demand_clusters,
        ..resources
    }
}

/// The routes of [`generate_shared`] alone (with an on-demand sidecar's virtual hosts):
/// after a change to VirtualServices alone they replace those generated before
/// (clusters and endpoints do not read them).
pub fn generate_shared_routes(snapshot: &Snapshot, proxy: &Proxy) -> ProxyResources {
    shared_routes(&Scope::new(snapshot, proxy))
}

fn shared_routes(scope: &Scope) -> ProxyResources {
    let configs = match scope.proxy.kind {
        ProxyKind::Sidecar => route::sidecar(scope),
        ProxyKind::Router => return ProxyResources::default(),
    };
    let (configs, virtual_hosts) = if scope.proxy.on_demand {
        on_demand::split(configs)
    } else {
        (configs, Vec::new())
    };
    let named = |name: String, resource| NamedResource { name, resource };
    ProxyResources {
        routes: configs
            .into_iter()
            .map(|r| named(r.name.clone(), pack(r)))
            .collect(),
        virtual_hosts: virtual_hosts
            .into_iter()
            .map(|h| named(h.name.clone(), pack(h)))
            .collect(),
        ..ProxyResources::default()
    }
}

/// An on-demand sidecar's virtual hosts among `held` (the names of its shared set, each
/// read by `resource_of` only when it is patched) whose
/// host a pattern of `patterns` matches (`reviews.shop.svc.cluster.local`,
/// `*.example.com`), with their routes translated again: after a change to the
/// VirtualServices of those hosts alone (and none that answers with a body, which reaches
/// the route configs), these replace the ones of the same names, and nothing else
/// changes. Only the routes are made again: a virtual host's domains and headers come
/// from its service, which did not change.
pub fn patch_virtual_host_routes<'h>(
    snapshot: &Snapshot,
    proxy: &Proxy,
    patterns: &std::collections::BTreeSet<String>,
    held: impl Iterator<Item = &'h str>,
    resource_of: impl Fn(&str) -> Option<Any>,
) -> Vec<NamedResource> {
    use envoy_types::pb::envoy::config::route::v3::VirtualHost;
    use prost::Message;
    let scope = Scope::new(snapshot, proxy);
    held.filter_map(|name| {
        let (_, host_port) = names::parse_on_demand_virtual_host(name)?;
        let (host, port) = host_port.rsplit_once(':')?;
        let matched = patterns
            .iter()
            .any(|p| fleetmesh_model::host::host_matches(p, host));
        if host_port == names::UNKNOWN_HOSTS || !matched {
            return None;
        }
        let resource = resource_of(name)?;
        let mut virtual_host = VirtualHost::decode(resource.value.as_slice()).ok()?;
        virtual_host.routes = route::routes_for(&scope, host, port.parse().ok()?, "mesh");
        Some(NamedResource {
            name: name.to_string(),
            resource: pack(virtual_host),
        })
    })
    .collect()
}

/// The part of [`generate_shared`] that depends on the endpoints of `hosts`: their
/// outbound clusters (which name the endpoints' identities, or list DNS endpoints) and
/// their endpoints. After a change to those endpoints alone, this replaces the hosts'
/// resources in what was generated before; nothing else depends on endpoints.
pub fn generate_shared_hosts(
    snapshot: &Snapshot,
    proxy: &Proxy,
    hosts: &std::collections::BTreeSet<String>,
) -> ProxyResources {
    let mut scope = Scope::new(snapshot, proxy);
    scope.services.retain(|s| hosts.contains(&s.hostname));
    ProxyResources {
        endpoints: endpoint::build(&scope),
        ..outbound_clusters(&scope, ProxyResources::default())
    }
}

/// The rest: what depends on the workload itself (its inbound side, its listeners, a
/// gateway's servers and credentials).
pub fn generate_own(snapshot: &Snapshot, proxy: &Proxy) -> ProxyResources {
    let scope = Scope::new(snapshot, proxy);
    let clusters = cluster::local_clusters(&scope);
    match proxy.kind {
        ProxyKind::Sidecar => ProxyResources {
            clusters,
            listeners: listener::sidecar(&scope),
            ..ProxyResources::default()
        },
        ProxyKind::Router => {
            let gateway = listener::gateway(&scope);
            let secrets = credentials::secrets(&gateway.credentials);
            ProxyResources {
                clusters,
                listeners: gateway.listeners,
                secrets,
                routes: gateway
                    .routes
                    .into_iter()
                    .map(|r| NamedResource {
                        name: r.name.clone(),
                        resource: pack(r),
                    })
                    .collect(),
                ..ProxyResources::default()
            }
        }
    }
}

pub(crate) fn pack<T: prost::Name + prost::Message>(message: T) -> Any {
    envoy_types::util::pack_any(message)
}
