//! What a sidecar that fetches its outbound config as it first calls a host holds (routes
//! on demand): route configs without virtual hosts, with VHDS over ADS, and each virtual
//! host a resource of its own, `CONFIG/HOST:PORT`; and only the clusters that plain TCP
//! and TLS connections may need, the others (those of HTTP ports, only ever reached by a
//! route) fetched by Envoy's on-demand CDS when a route first uses them. A change to one
//! service's routes is then one small resource, sent only to the proxies that called it.
//!
//! The virtual host for hosts the mesh does not know (`allow_any` or `block_all`, domain
//! `*`) is kept as `CONFIG/*` and never sent as it is: matching every host, it would
//! leave Envoy nothing to ask for. The server answers a call to an unknown host with a
//! copy of it for that host alone.

use crate::scope::Scope;
use crate::{NamedResource, names};
use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, Vhds, VirtualHost};
use std::collections::HashSet;

/// `configs` as an on-demand sidecar gets them: the configs without virtual hosts, and
/// the virtual hosts by their on-demand names.
pub fn split(configs: Vec<RouteConfiguration>) -> (Vec<RouteConfiguration>, Vec<VirtualHost>) {
    let mut virtual_hosts = Vec::new();
    let configs = configs
        .into_iter()
        .map(|mut config| {
            for mut host in std::mem::take(&mut config.virtual_hosts) {
                let unknown_hosts = host.domains.iter().any(|d| d == "*");
                let name = if unknown_hosts {
                    names::UNKNOWN_HOSTS
                } else {
                    &host.name
                };
                host.name = names::on_demand_virtual_host(&config.name, name);
                virtual_hosts.push(host);
            }
            config.vhds = Some(Vhds {
                config_source: Some(crate::common::ads()),
            });
            config
        })
        .collect();
    (configs, virtual_hosts)
}

/// `clusters` (a sidecar's outbound ones) as those it is sent at once and those it asks
/// for when a route first uses them: a cluster of a service's HTTP port is only ever a
/// route's destination; the others may be a TCP proxy's or a TLS chain's.
pub fn split_clusters(
    scope: &Scope,
    clusters: Vec<NamedResource>,
) -> (Vec<NamedResource>, Vec<NamedResource>) {
    // Looked up once per cluster: thousands of each in a large mesh.
    let http_ports: HashSet<(&str, u32)> = scope
        .services
        .iter()
        .flat_map(|s| {
            let http = s.ports.iter().filter(|p| p.protocol.is_http());
            http.map(|p| (s.hostname.as_str(), p.port))
        })
        .collect();
    clusters.into_iter().partition(|cluster| {
        names::parse_outbound_cluster(&cluster.name)
            .is_none_or(|(port, _, host)| !http_ports.contains(&(host, port)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, domains: &[&str]) -> VirtualHost {
        VirtualHost {
            name: name.into(),
            domains: domains.iter().map(|d| d.to_string()).collect(),
            ..VirtualHost::default()
        }
    }

    #[test]
    fn virtual_hosts_leave_their_config_under_its_name() {
        let config = RouteConfiguration {
            name: "80".into(),
            virtual_hosts: vec![
                host(
                    "reviews.shop.svc.cluster.local:80",
                    &["reviews", "reviews:80"],
                ),
                host("allow_any", &["*"]),
            ],
            ..RouteConfiguration::default()
        };
        let (configs, hosts) = split(vec![config]);
        assert!(configs[0].virtual_hosts.is_empty());
        assert!(configs[0].vhds.is_some(), "fetched over VHDS");
        let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["80/reviews.shop.svc.cluster.local:80", "80/*"]);
        assert_eq!(
            hosts[1].domains,
            ["*"],
            "the unknown-hosts template keeps its domain"
        );
    }
}
