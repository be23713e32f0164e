//! One proxy's resources with their content hashes, by type. Each type's set is shared
//! (`Arc`) between proxies that have the same one, and every resource between the sets
//! that hold it: in a large mesh most of a proxy's config is its namespace's.

use envoy_types::pb::google::protobuf::Any;
use fleetmesh_xds::{
    CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, NamedResource, ProxyResources, ROUTE_TYPE,
    SECRET_TYPE,
};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
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
    fn with(mut entries: BTreeMap<String, Arc<Entry>>, own: Vec<NamedResource>) -> TypeResources {
        for r in own {
            let hash = hash(&[&r.resource.value]);
            entries.insert(
                r.name,
                Arc::new(Entry {
                    resource: r.resource,
                    hash,
                }),
            );
        }
        let version = version_of(entries.iter().map(|(n, e)| (n.as_str(), e.hash.as_str())));
        TypeResources { entries, version }
    }
}

/// Every type's resources. Equal when every type's version is: versions hash content.
#[derive(Debug, Clone, Default)]
pub struct Generated {
    types: BTreeMap<&'static str, Arc<TypeResources>>,
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
    pub fn new(resources: ProxyResources) -> Generated {
        Generated::compose(&Generated::default(), resources)
    }

    /// `own` added to `shared`. A type `own` has nothing of keeps `shared`'s set itself.
    pub fn compose(shared: &Generated, mut own: ProxyResources) -> Generated {
        let mut types = BTreeMap::new();
        for type_url in fleetmesh_xds::PUSH_ORDER {
            let mine = take(&mut own, type_url);
            let theirs = shared.types.get(type_url);
            let set = match theirs {
                Some(theirs) if mine.is_empty() => theirs.clone(),
                _ => Arc::new(TypeResources::with(
                    theirs.map(|t| t.entries.clone()).unwrap_or_default(),
                    mine,
                )),
            };
            types.insert(type_url, set);
        }
        Generated { types }
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
