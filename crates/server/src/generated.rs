//! One proxy's resources with their content hashes, by type. Each type's set is shared
//! (`Arc`) between proxies that have the same one, and every resource between the sets
//! that hold it: in a large mesh most of a proxy's config is its namespace's.

use envoy_types::pb::google::protobuf::Any;
use fleetmesh_xds::{
    CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, NamedResource, ProxyResources, ROUTE_TYPE,
    SECRET_TYPE, names,
};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// A resource and the hash of its bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub resource: Any,
    pub hash: String,
}

/// One type's resources by name, and the version of the whole set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TypeResources {
    pub entries: BTreeMap<String, Arc<Entry>>,
    pub version: String,
}

impl TypeResources {
    pub(crate) fn new(entries: BTreeMap<String, Arc<Entry>>) -> TypeResources {
        let version = version_of(entries.iter().map(|(n, e)| (n.as_str(), e.hash.as_str())));
        TypeResources { entries, version }
    }

    fn of(resources: Vec<NamedResource>) -> TypeResources {
        TypeResources::new(resources.into_iter().map(entry).collect())
    }

    /// `over`'s resources added to `under`'s.
    fn merged(under: &TypeResources, over: &TypeResources) -> TypeResources {
        let mut entries = under.entries.clone();
        entries.extend(over.entries.iter().map(|(n, e)| (n.clone(), e.clone())));
        TypeResources::new(entries)
    }
}

fn entry(r: NamedResource) -> (String, Arc<Entry>) {
    let hash = hash(&[&r.resource.value]);
    let entry = Entry {
        resource: r.resource,
        hash,
    };
    (r.name, Arc::new(entry))
}

/// Every type's resources. Equal when every type's version is: versions hash content.
#[derive(Debug, Clone, Default)]
pub struct Generated {
    types: BTreeMap<&'static str, Arc<TypeResources>>,
    /// What a proxy's resources were composed from, to compose them again when only the
    /// shared part changed.
    parts: Option<Parts>,
}

#[derive(Debug, Clone)]
struct Parts {
    shared: Arc<Generated>,
    own: Arc<Generated>,
}

impl PartialEq for Generated {
    fn eq(&self, other: &Generated) -> bool {
        self.types.len() == other.types.len()
            && self
                .types
                .iter()
                .zip(&other.types)
                .all(|((t1, a), (t2, b))| t1 == t2 && a.version == b.version)
    }
}

fn take(resources: &mut ProxyResources, type_url: &str) -> Vec<NamedResource> {
    std::mem::take(match type_url {
        CLUSTER_TYPE => &mut resources.clusters,
        ENDPOINT_TYPE => &mut resources.endpoints,
        LISTENER_TYPE => &mut resources.listeners,
        ROUTE_TYPE => &mut resources.routes,
        SECRET_TYPE => &mut resources.secrets,
        _ => return Vec::new(),
    })
}

impl Generated {
    pub fn new(mut resources: ProxyResources) -> Generated {
        let types = fleetmesh_xds::PUSH_ORDER
            .into_iter()
            .map(|t| (t, Arc::new(TypeResources::of(take(&mut resources, t)))))
            .collect();
        Generated { types, parts: None }
    }

    /// A proxy's resources: `own` added to `shared`.
    pub fn compose(shared: &Arc<Generated>, own: ProxyResources) -> Generated {
        Generated::compose_parts(shared, Arc::new(Generated::new(own)), None)
    }

    /// These (composed) resources with `shared` in place of the shared part they were
    /// composed from; `None` when they were not composed.
    pub fn recompose(&self, shared: &Arc<Generated>) -> Option<Generated> {
        let own = self.parts.as_ref()?.own.clone();
        Some(Generated::compose_parts(shared, own, Some(self)))
    }

    /// A type whose shared set is the one `earlier` was composed from keeps `earlier`'s
    /// set; a type `own` has nothing of is `shared`'s set itself.
    fn compose_parts(
        shared: &Arc<Generated>,
        own: Arc<Generated>,
        earlier: Option<&Generated>,
    ) -> Generated {
        let mut types = BTreeMap::new();
        for type_url in fleetmesh_xds::PUSH_ORDER {
            let theirs = shared.types.get(type_url);
            let mine = own.types.get(type_url).filter(|t| !t.entries.is_empty());
            let unchanged = earlier.and_then(|e| {
                let before = e.parts.as_ref()?.shared.types.get(type_url);
                let same = match (before, theirs) {
                    (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                    (a, b) => a.is_none() && b.is_none(),
                };
                same.then(|| e.types.get(type_url).cloned()).flatten()
            });
            let set = match (unchanged, theirs, mine) {
                (Some(set), _, _) => set,
                (None, Some(theirs), None) => theirs.clone(),
                (None, None, Some(mine)) => mine.clone(),
                (None, Some(theirs), Some(mine)) => Arc::new(TypeResources::merged(theirs, mine)),
                (None, None, None) => Arc::default(),
            };
            types.insert(type_url, set);
        }
        Generated {
            types,
            parts: Some(Parts {
                shared: shared.clone(),
                own,
            }),
        }
    }

    /// These (shared) resources after a change to the endpoints of `hosts` alone: the
    /// hosts' clusters and endpoints replaced by `fresh` (from
    /// [`fleetmesh_xds::generate_shared_hosts`]). A set that comes out the same stays
    /// the same `Arc`, so that what was composed from it needs no composing again.
    pub fn with_hosts_replaced(
        &self,
        hosts: &BTreeSet<String>,
        mut fresh: ProxyResources,
    ) -> Generated {
        let mut types = self.types.clone();
        for type_url in [CLUSTER_TYPE, ENDPOINT_TYPE] {
            let Some(before) = self.types.get(type_url) else {
                continue;
            };
            let mut entries = before.entries.clone();
            entries.retain(|name, _| {
                names::parse_outbound_cluster(name).is_none_or(|(_, _, host)| !hosts.contains(host))
            });
            entries.extend(take(&mut fresh, type_url).into_iter().map(entry));
            let after = TypeResources::new(entries);
            if after.version != before.version {
                types.insert(type_url, Arc::new(after));
            }
        }
        Generated { types, parts: None }
    }

    pub fn of_type(&self, type_url: &str) -> Option<&Arc<TypeResources>> {
        self.types.get(type_url)
    }
}

/// Short hex SHA-256 of some byte strings: stable across restarts and builds.
pub fn hash(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hex::encode(&hasher.finalize()[..8])
}

/// The version of a set of named resources, from their names and hashes.
pub fn version_of<'a>(items: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut hasher = Sha256::new();
    for (name, hash) in items {
        hasher.update(name.as_bytes());
        hasher.update([0]);
        hasher.update(hash.as_bytes());
        hasher.update([0]);
    }
    hex::encode(&hasher.finalize()[..8])
}

/// A short name for a type URL, as istiod's metrics label it.
pub fn short_type(type_url: &str) -> &'static str {
    match type_url {
        CLUSTER_TYPE => "cds",
        ENDPOINT_TYPE => "eds",
        LISTENER_TYPE => "lds",
        ROUTE_TYPE => "rds",
        SECRET_TYPE => "sds",
        _ => "other",
    }
}
