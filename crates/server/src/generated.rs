//! One proxy's resources with their content hashes, by type.

use envoy_types::pb::google::protobuf::Any;
use fleetmesh_xds::{
    CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ProxyResources, ROUTE_TYPE, SECRET_TYPE,
};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// A resource and the hash of its bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub resource: Any,
    pub hash: String,
}

/// One type's resources by name, and the version of the whole set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TypeResources {
    pub entries: BTreeMap<String, Entry>,
    pub version: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Generated {
    types: BTreeMap<&'static str, TypeResources>,
}

impl Generated {
    pub fn new(resources: ProxyResources) -> Generated {
        let mut types = BTreeMap::new();
        for type_url in fleetmesh_xds::PUSH_ORDER {
            let entries: BTreeMap<String, Entry> = resources
                .of_type(type_url)
                .iter()
                .map(|r| {
                    (
                        r.name.clone(),
                        Entry {
                            hash: hash(&[&r.resource.value]),
                            resource: r.resource.clone(),
                        },
                    )
                })
                .collect();
            let version = version_of(entries.iter().map(|(n, e)| (n.as_str(), e.hash.as_str())));
            types.insert(type_url, TypeResources { entries, version });
        }
        Generated { types }
    }

    pub fn of_type(&self, type_url: &str) -> Option<&TypeResources> {
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
