//! Virtual hosts on demand (VHDS, delta only): which virtual host answers a Host an
//! on-demand sidecar called, and what its stream sends for the names it subscribed to.
//!
//! A route config with VHDS waits (Envoy's initial fetch timeout, 15 s) for a first
//! answer that reaches it: one per route config, a removal of a name it never held, gives
//! that without adding anything. Then, when a request's Host matches no virtual host it
//! holds, Envoy subscribes to `CONFIG/HOST` (an alias; again, if it asks again), holding
//! the request until an answer names that alias: the
//! virtual host whose domains hold HOST (`CONFIG/reviews.shop.svc.cluster.local:80`),
//! a copy of the unknown-hosts virtual host for HOST alone (pass through, or 502 under
//! `REGISTRY_ONLY`), or, where there is neither, an empty resource (Envoy answers 404).

use crate::generated::{Entry, TypeResources};
use envoy_types::pb::envoy::config::route::v3::VirtualHost;
use envoy_types::pb::envoy::service::discovery::v3::Resource;
use envoy_types::pb::google::protobuf::Any;
use fleetmesh_xds::names;
use prost::Message;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// What a stream keeps of its on-demand names besides what the proxy holds.
#[derive(Default)]
pub struct Answered {
    /// Subscribed aliases already answered.
    names: BTreeSet<String>,
    /// Route configs whose first answer went.
    configs: BTreeSet<String>,
    /// Aliases answered with nothing (no virtual host may answer them).
    unresolved: BTreeSet<String>,
}

impl Answered {
    /// The proxy asked for `name` (again): answer it, even if it was answered before.
    pub fn asked(&mut self, name: &str) {
        self.names.remove(name);
        self.unresolved.remove(name);
    }
}

/// A response's worth: resources to add or update, and names to remove.
#[derive(Default)]
pub struct Answer {
    pub updated: Vec<Resource>,
    pub removed: Vec<String>,
}

/// What goes to a proxy with route configs `routes` that subscribed to `subscribed`
/// and holds `known` (name → hash), given its virtual hosts `set`: a first answer for
/// each route config; virtual hosts new or changed since it got them, with the aliases
/// each answers; those no alias resolves to any more, removed; and an answer for every
/// alias not answered before. `known` and `answered` follow.
pub fn answer(
    set: &TypeResources,
    routes: &TypeResources,
    subscribed: &BTreeSet<String>,
    known: &mut BTreeMap<String, String>,
    answered: &mut Answered,
) -> Answer {
    let mut answer = Answer::default();
    for (config, _) in routes.iter() {
        if !answered.configs.contains(config) {
            answered.configs.insert(config.clone());
            let nothing = names::on_demand_virtual_host(config, names::UNKNOWN_HOSTS);
            answer.removed.push(nothing);
        }
    }
    answered.names.retain(|name| subscribed.contains(name));
    answered.unresolved.retain(|name| subscribed.contains(name));
    let mut desired: BTreeMap<String, (Arc<Entry>, Vec<String>)> = BTreeMap::new();
    for name in subscribed {
        let Some((config, host)) = names::parse_on_demand_virtual_host(name) else {
            continue; // a route config's own name: answered above
        };
        match resolve(set, config, host, name) {
            Some((resolved, entry)) => {
                let (_, aliases) = desired.entry(resolved).or_insert((entry, vec![]));
                aliases.push(name.clone());
            }
            None => {
                answered.unresolved.insert(name.clone());
                if answered.names.insert(name.clone()) {
                    answer.updated.push(Resource {
                        name: name.clone(),
                        aliases: vec![name.clone()],
                        ..Resource::default()
                    });
                }
            }
        }
    }
    for (name, (entry, aliases)) in &desired {
        let unanswered = aliases.iter().any(|a| !answered.names.contains(a));
        if known.get(name) == Some(&entry.hash) && !unanswered {
            continue;
        }
        answered.names.extend(aliases.iter().cloned());
        known.insert(name.clone(), entry.hash.clone());
        answer.updated.push(Resource {
            name: name.clone(),
            version: entry.hash.clone(),
            resource: Some(entry.resource()),
            aliases: aliases.clone(),
            ..Resource::default()
        });
    }
    let gone: Vec<String> = known
        .keys()
        .filter(|name| !desired.contains_key(*name))
        .cloned()
        .collect();
    for name in gone {
        known.remove(&name);
        answer.removed.push(name);
    }
    // Envoy refuses a response naming one resource twice: a host called `*` is answered
    // as `CONFIG/*`, which answers its route config's namespace as well.
    let updated: BTreeSet<&String> = answer.updated.iter().map(|r| &r.name).collect();
    answer.removed.retain(|name| !updated.contains(name));
    answer
}

/// Keeps at most `bound` of `subscribed` by forgetting aliases of hosts the mesh does not
/// know (answered by a virtual host of their own, named as the alias, or by nothing):
/// the next answer removes their virtual hosts, and Envoy asks again if they are called
/// again. Route configs and the mesh's own hosts (no more than its virtual hosts) stay.
pub fn forget_unknown_hosts(
    subscribed: &mut BTreeSet<String>,
    known: &BTreeMap<String, String>,
    answered: &mut Answered,
    bound: usize,
) {
    if subscribed.len() <= bound {
        return;
    }
    let unknown: Vec<String> = subscribed
        .iter()
        .filter(|name| names::parse_on_demand_virtual_host(name).is_some())
        .filter(|alias| known.contains_key(*alias) || answered.unresolved.contains(*alias))
        .take(subscribed.len() - bound)
        .cloned()
        .collect();
    for alias in unknown {
        subscribed.remove(&alias);
        answered.asked(&alias);
    }
}

/// The virtual host that answers `host` (as called) in route config `config`, and its
/// name: the one with that domain, else with the longest wildcard domain that holds it,
/// else the unknown-hosts one made for `host` alone (named `alias`). `None` for a host
/// no virtual host may answer: none at all, or a name with `*` or `/`, which would match
/// more than the host called.
fn resolve(
    set: &TypeResources,
    config: &str,
    host: &str,
    alias: &str,
) -> Option<(String, Arc<Entry>)> {
    if host.is_empty() || host.contains(['*', '/']) {
        return None;
    }
    let host = host.to_ascii_lowercase();
    let domains = set.aliases(by_domain);
    let exact = std::iter::once(host.clone());
    let wildcards = host
        .match_indices('.')
        .map(|(at, _)| format!("*{}", &host[at..]));
    for domain in exact.chain(wildcards) {
        let key = names::on_demand_virtual_host(config, &domain);
        if let Some(name) = domains.get(&key)
            && let Some(entry) = set.get(name)
        {
            return Some((name.clone(), entry.clone()));
        }
    }
    let template = set.get(&names::on_demand_virtual_host(config, names::UNKNOWN_HOSTS))?;
    let mut virtual_host = VirtualHost::decode(template.resource().value.as_slice()).ok()?;
    virtual_host.name = alias.to_string();
    virtual_host.domains = vec![host];
    let resource = Any {
        type_url: fleetmesh_xds::VIRTUAL_HOST_TYPE.to_string(),
        value: virtual_host.encode_to_vec(),
    };
    Some((alias.to_string(), Arc::new(Entry::new(alias, resource))))
}

/// `CONFIG/DOMAIN` → the name of the virtual host with that domain, for every virtual
/// host of `set` (the unknown-hosts one, domain `*`, answers none by its domain).
fn by_domain(set: &TypeResources) -> HashMap<String, String> {
    let mut domains = HashMap::new();
    for (name, entry) in set.iter() {
        let Some((config, _)) = names::parse_on_demand_virtual_host(name) else {
            continue;
        };
        let Ok(virtual_host) = Domains::decode(entry.resource().value.as_slice()) else {
            continue;
        };
        for domain in virtual_host.domains.iter().filter(|d| *d != "*") {
            let key = names::on_demand_virtual_host(config, &domain.to_ascii_lowercase());
            domains.entry(key).or_insert_with(|| name.clone());
        }
    }
    domains
}

/// A `VirtualHost`'s domains alone: decoding only them skips over its routes without
/// building them (most of a virtual host's bytes), once per virtual host of every new
/// set, after every route change.
#[derive(Clone, PartialEq, prost::Message)]
struct Domains {
    /// `VirtualHost.domains`.
    #[prost(string, repeated, tag = "2")]
    domains: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetmesh_xds::NamedResource;

    fn virtual_host(name: &str, domains: &[&str]) -> NamedResource {
        let host = VirtualHost {
            name: name.into(),
            domains: domains.iter().map(|d| d.to_string()).collect(),
            ..VirtualHost::default()
        };
        NamedResource {
            name: name.into(),
            resource: Any {
                type_url: fleetmesh_xds::VIRTUAL_HOST_TYPE.into(),
                value: host.encode_to_vec(),
            },
        }
    }

    fn set(hosts: Vec<NamedResource>) -> TypeResources {
        TypeResources::new(
            hosts
                .into_iter()
                .map(|r| (r.name.clone(), Arc::new(Entry::new(&r.name, r.resource))))
                .collect(),
        )
    }

    /// A proxy's route configs: only their names are read, so any resource stands in.
    fn routes() -> TypeResources {
        set(vec![virtual_host("80", &[])])
    }

    fn mesh() -> TypeResources {
        set(vec![
            virtual_host(
                "80/reviews.shop.svc.cluster.local:80",
                &["reviews", "reviews:80"],
            ),
            virtual_host("80/*.example.com:80", &["*.example.com"]),
            virtual_host("80/*", &["*"]),
        ])
    }

    fn names(set: &[Resource]) -> Vec<(&str, &[String], bool)> {
        set.iter()
            .map(|r| (r.name.as_str(), r.aliases.as_slice(), r.resource.is_some()))
            .collect()
    }

    #[test]
    fn a_called_host_gets_its_virtual_host_once() {
        let mesh = mesh();
        let (mut known, mut answered) = (BTreeMap::new(), Answered::default());
        let first = answer(
            &mesh,
            &routes(),
            &BTreeSet::new(),
            &mut known,
            &mut answered,
        );
        assert!(first.updated.is_empty(), "nothing until called");
        assert_eq!(first.removed, ["80/*"], "the route config is answered");

        let subscribed = BTreeSet::from(["80/Reviews".to_string()]);
        let called = answer(&mesh, &routes(), &subscribed, &mut known, &mut answered);
        let alias = ["80/Reviews".to_string()];
        assert_eq!(
            names(&called.updated),
            [("80/reviews.shop.svc.cluster.local:80", &alias[..], true)]
        );
        assert!(called.removed.is_empty());
        let again = answer(&mesh, &routes(), &subscribed, &mut known, &mut answered);
        assert!(again.updated.is_empty() && again.removed.is_empty());
        answered.asked("80/Reviews");
        let asked_again = answer(&mesh, &routes(), &subscribed, &mut known, &mut answered);
        assert_eq!(names(&asked_again.updated).len(), 1, "answered again");
    }

    #[test]
    fn unknown_hosts_get_a_virtual_host_of_their_own_and_wildcards_match() {
        let mesh = mesh();
        let (mut known, mut answered) = (BTreeMap::new(), Answered::default());
        let subscribed: BTreeSet<String> = ["80/a.b.example.com", "80/elsewhere.org:80", "80/*"]
            .map(String::from)
            .into();
        let called = answer(&mesh, &routes(), &subscribed, &mut known, &mut answered);
        let got = names(&called.updated);
        let alias = |a: &str| vec![a.to_string()];
        assert_eq!(
            got[0],
            ("80/*", &alias("80/*")[..], false),
            "never a catch-all"
        );
        assert_eq!(
            got[1],
            (
                "80/*.example.com:80",
                &alias("80/a.b.example.com")[..],
                true
            )
        );
        assert_eq!(
            got[2],
            (
                "80/elsewhere.org:80",
                &alias("80/elsewhere.org:80")[..],
                true
            )
        );
        let made = VirtualHost::decode(
            called.updated[2]
                .resource
                .as_ref()
                .unwrap()
                .value
                .as_slice(),
        );
        assert_eq!(made.unwrap().domains, ["elsewhere.org:80"]);
    }

    #[test]
    fn hosts_the_mesh_does_not_know_are_forgotten_past_the_bound() {
        let mesh = mesh();
        let (mut known, mut answered) = (BTreeMap::new(), Answered::default());
        let mut subscribed: BTreeSet<String> = (0..10)
            .map(|n| format!("80/elsewhere-{n}.org"))
            .chain(["80/reviews".to_string(), "80/*".to_string()])
            .collect();
        answer(&mesh, &routes(), &subscribed, &mut known, &mut answered);
        forget_unknown_hosts(&mut subscribed, &known, &mut answered, 4);
        assert_eq!(subscribed.len(), 4);
        assert!(
            subscribed.contains("80/reviews"),
            "the mesh's own host stays"
        );
        let after = answer(&mesh, &routes(), &subscribed, &mut known, &mut answered);
        // Seven made for unknown hosts; the eighth (`*`) was answered with nothing.
        assert_eq!(
            after.removed.len(),
            7,
            "the forgotten ones' virtual hosts go"
        );
        assert!(after.updated.is_empty());
    }

    #[test]
    fn a_host_that_leaves_the_mesh_is_replaced_by_the_unknown_hosts_one() {
        let (mut known, mut answered) = (BTreeMap::new(), Answered::default());
        let subscribed = BTreeSet::from(["80/reviews".to_string()]);
        answer(&mesh(), &routes(), &subscribed, &mut known, &mut answered);
        let without = set(vec![virtual_host("80/*", &["*"])]);
        let after = answer(&without, &routes(), &subscribed, &mut known, &mut answered);
        assert_eq!(after.removed, ["80/reviews.shop.svc.cluster.local:80"]);
        assert_eq!(after.updated[0].name, "80/reviews");
    }
}
