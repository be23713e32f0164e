//! Routes for a sidecar that fetches virtual hosts as it first calls them (VHDS on
//! demand): its route configs carry no virtual host, only VHDS over ADS, and each virtual
//! host is a resource of its own, `CONFIG/HOST:PORT`. A change to one service's routes
//! is then one small resource, sent only to the proxies that called it.
//!
//! The virtual host for hosts the mesh does not know (`allow_any` or `block_all`, domain
//! `*`) is kept as `CONFIG/*` and never sent as it is: matching every host, it would
//! leave Envoy nothing to ask for. The server answers a call to an unknown host with a
//! copy of it for that host alone.

use crate::names;
use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, Vhds, VirtualHost};

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
