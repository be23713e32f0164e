//! RDS: virtual hosts per service port, with routes translated from VirtualServices.

pub(crate) mod action;
mod matching;

use crate::Interception;
use crate::names;
use crate::scope::{GatewayServer, Scope};
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteConfiguration, RouteMatch, VirtualHost, route, route_match,
};
use fleetmesh_api::networking::{HttpRoute, VirtualServiceSpec};
use fleetmesh_api::resource::Config;
use std::collections::BTreeSet;

/// A sidecar's outbound route configs. Without capture, one HTTP-proxy config for every
/// port (requests name the port in Host, `reviews:9080`, except for port 80); with
/// capture, one per service port, named by the port, as istiod does, ending in istiod's
/// catch-all for hosts the mesh does not know.
pub fn sidecar(scope: &Scope) -> Vec<RouteConfiguration> {
    match scope.proxy.interception {
        Interception::None => vec![outbound(scope, names::HTTP_PROXY_ROUTE, None)],
        Interception::Redirect => scope
            .http_ports()
            .into_iter()
            .map(|port| {
                let mut config = outbound(scope, &port.to_string(), Some(port));
                config.virtual_hosts.push(unknown_hosts(scope));
                config
            })
            .collect(),
    }
}

/// Where a captured request for a host the mesh does not know goes, as istiod routes it:
/// on to the address the app dialled (`ALLOW_ANY`: virtual host `allow_any`, Envoy's
/// original destination), or answered 502 (`REGISTRY_ONLY`: `block_all`). Without it
/// such requests got 404 where Istio lets them out.
fn unknown_hosts(scope: &Scope) -> VirtualHost {
    use envoy_types::pb::envoy::config::route::v3::{
        DirectResponseAction, RouteAction, route_action,
    };
    let (name, action) = if scope.registry_only() {
        let refuse = DirectResponseAction {
            status: 502,
            ..DirectResponseAction::default()
        };
        ("block_all", route::Action::DirectResponse(refuse))
    } else {
        let pass = RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(
                names::PASSTHROUGH_CLUSTER.into(),
            )),
            // As istiod: no timeout for connections it knows nothing about.
            timeout: Some(envoy_types::pb::google::protobuf::Duration::default()),
            ..RouteAction::default()
        };
        ("allow_any", route::Action::Route(pass))
    };
    VirtualHost {
        name: name.into(),
        domains: vec!["*".into()],
        request_headers_to_remove: crate::telemetry::peer_header_names(),
        routes: vec![Route {
            name: name.into(),
            r#match: Some(RouteMatch {
                path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
                ..RouteMatch::default()
            }),
            action: Some(action),
            ..Route::default()
        }],
        ..VirtualHost::default()
    }
}

/// A virtual host per visible HTTP service port (of `only_port`, if given).
fn outbound(scope: &Scope, name: &str, only_port: Option<u32>) -> RouteConfiguration {
    let mut used_domains = BTreeSet::new();
    let mut virtual_hosts = Vec::new();
    for service in &scope.services {
        let ports = service.ports.iter().filter(|p| p.protocol.is_http());
        for port in ports.filter(|p| only_port.is_none_or(|only| only == p.port)) {
            // Names without a port are unambiguous only within one port's config (and for
            // port 80, which clients leave out).
            let bare_names = only_port.is_some() || port.port == 80;
            let domains: Vec<String> = domains_for(
                &service.hostname,
                &service.namespace,
                port.port,
                bare_names,
                scope,
            )
            .into_iter()
            .filter(|d| used_domains.insert(d.clone()))
            .collect();
            if domains.is_empty() {
                continue;
            }
            let routes = routes_for(scope, &service.hostname, port.port, "mesh");
            virtual_hosts.push(VirtualHost {
                name: format!("{}:{}", service.hostname, port.port),
                domains,
                routes,
                request_headers_to_remove: if service.mesh_external {
                    crate::telemetry::peer_header_names()
                } else {
                    Vec::new()
                },
                ..VirtualHost::default()
            });
        }
    }
    let mut config = route_configuration(name.to_string(), virtual_hosts);
    // Who calls, for the server's metrics: added once for the whole config, and removed
    // again (after it, as the most specific) by the virtual hosts of hosts outside the
    // mesh, which are never told.
    if crate::telemetry::enabled(scope) {
        config.request_headers_to_add = crate::telemetry::peer_headers();
    }
    config.most_specific_header_mutations_wins = true;
    config
}

/// A gateway's route config for one server port: a virtual host per host of each bound
/// VirtualService that the port's servers accept.
pub fn gateway(scope: &Scope, port: u32, servers: &[&GatewayServer]) -> RouteConfiguration {
    let mut used_domains = BTreeSet::new();
    let mut virtual_hosts = Vec::new();
    for server in servers {
        let gateway_name = &server.gateway;
        // VirtualServices with only tcp or tls routes have nothing to say about HTTP.
        let with_http = scope
            .virtual_services(gateway_name)
            .filter(|vs| !vs.spec.http.is_empty());
        for vs in with_http {
            for host in scope.vs_hosts(vs) {
                if !server.accepts(&host) || !used_domains.insert(host.clone()) {
                    continue;
                }
                let routes = vs_routes(scope, vs, port, gateway_name);
                virtual_hosts.push(VirtualHost {
                    name: format!("{host}:{port}"),
                    domains: vec![host.clone(), format!("{host}:{port}")],
                    routes,
                    ..VirtualHost::default()
                });
            }
        }
    }
    route_configuration(names::gateway_route(port), virtual_hosts)
}

/// A route configuration of these virtual hosts. Clusters are not validated (they may
/// arrive after the routes); direct responses may carry bodies up to Istio's limit.
fn route_configuration(name: String, virtual_hosts: Vec<VirtualHost>) -> RouteConfiguration {
    use envoy_types::pb::envoy::config::route::v3::route::Action;
    use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};
    let direct_bodies = virtual_hosts.iter().flat_map(|v| &v.routes).any(
        |r| matches!(&r.action, Some(Action::DirectResponse(direct)) if direct.body.is_some()),
    );
    RouteConfiguration {
        name,
        virtual_hosts,
        validate_clusters: Some(BoolValue { value: false }),
        // Envoy's own limit is 4 KiB; only set when needed, so other configs stay as they were.
        max_direct_response_body_size_bytes: direct_bodies.then_some(UInt32Value {
            value: fleetmesh_api::validate::MAX_DIRECT_RESPONSE_BODY as u32,
        }),
        ..RouteConfiguration::default()
    }
}

/// The names a client may use for a service: FQDN and its shortenings within the
/// cluster domain (the bare name only from the same namespace), each with `:port`, and
/// without it when `bare_names`.
fn domains_for(
    host: &str,
    namespace: &str,
    port: u32,
    bare_names: bool,
    scope: &Scope,
) -> Vec<String> {
    let mut names = vec![host.to_string()];
    let svc_suffix = format!(".svc.{}", scope.snapshot.domain);
    if let Some(short) = host.strip_suffix(&svc_suffix) {
        names.push(format!("{short}.svc"));
        names.push(short.to_string());
        if namespace == scope.proxy.namespace
            && let Some(name) = short.strip_suffix(&format!(".{namespace}"))
        {
            names.push(name.to_string());
        }
    }
    let mut domains: Vec<String> = names.iter().map(|n| format!("{n}:{port}")).collect();
    if bare_names {
        domains.extend(names);
    }
    domains
}

/// The routes of `host`'s virtual host for `port`, as bound to `gateway` (`mesh` for
/// sidecars): its VirtualService's, else straight to the service.
pub(crate) fn routes_for(scope: &Scope, host: &str, port: u32, gateway: &str) -> Vec<Route> {
    match scope.http_virtual_service_for(host, gateway) {
        Some(vs) => vs_routes(scope, vs, port, gateway),
        None => vec![default_route(scope, host, port)],
    }
}

fn vs_routes(
    scope: &Scope,
    vs: &Config<VirtualServiceSpec>,
    port: u32,
    gateway: &str,
) -> Vec<Route> {
    vs.spec
        .http
        .iter()
        .flat_map(|http| translate(scope, vs, http, port, gateway))
        .collect()
}

fn default_route(scope: &Scope, host: &str, port: u32) -> Route {
    let destination = fleetmesh_api::networking::Destination {
        host: host.to_string(),
        ..Default::default()
    };
    let action = action::forward(
        scope,
        &HttpRoute::default(),
        &[(&destination, 100, None)],
        "",
        port,
    );
    Route {
        name: "default".to_string(),
        r#match: Some(RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::Prefix("/".to_string())),
            ..RouteMatch::default()
        }),
        action: Some(route::Action::Route(action)),
        ..Route::default()
    }
}

/// One HTTPRoute becomes one Envoy route per match that applies here (or one catch-all).
fn translate(
    scope: &Scope,
    vs: &Config<VirtualServiceSpec>,
    http: &HttpRoute,
    port: u32,
    gateway: &str,
) -> Vec<Route> {
    let matches = matching::applicable(scope, http, port, gateway);
    let Some(matches) = matches else {
        return vec![];
    };
    matches
        .into_iter()
        .map(|(route_match, from)| {
            let mut route = action::route(scope, vs, http, port);
            route.name = http.name.clone().unwrap_or_default();
            route.r#match = Some(route_match);
            // Envoy counts the route's requests under this prefix.
            route.stat_prefix = from.and_then(|m| m.stat_prefix.clone()).unwrap_or_default();
            route
        })
        .collect()
}
