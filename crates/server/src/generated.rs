//! One proxy's resources with their content hashes, by type. Each type's set is shared
//! (`Arc`) between proxies that have the same one, and every resource between the sets
//! that hold it: in a large mesh most of a proxy's config is its namespace's.

use bytes::Bytes;
use envoy_types::pb::google::protobuf::Any;
use fleetmesh_xds::{NamedResource, ProxyResources, ResourceType, names};
use prost::Message;
use prost::encoding::message;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, OnceLock};

/// A resource, the hash of its bytes, and its part of the version of a set that holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The resource as it goes in a state-of-the-world response (field `resources`, an
    /// `Any`): a response is a small header and these bytes, shared by every proxy's
    /// response rather than copied into each.
    encoded: Bytes,
    /// Where the `Any` starts in `encoded`, after the field's tag and length.
    any_at: usize,
    pub hash: String,
    /// Of its name and hash: a set's version is the sum of its entries' digests, so a
    /// set made by adding a few entries to another gets its version at the cost of those.
    digest: u128,
    /// [`name_key`] of its name, worked out once for every stream that sends it.
    pub name_key: u64,
}

/// Keys for [`name_key`], random per process: names are chosen by tenants, and
/// colliding ones must not be findable.
static NAME_KEYS: std::sync::LazyLock<std::hash::RandomState> =
    std::sync::LazyLock::new(std::hash::RandomState::new);

/// A keyed 64-bit hash of a resource name: what a delta stream keeps of the names a
/// proxy holds (`crate::held`).
pub fn name_key(name: &str) -> u64 {
    std::hash::BuildHasher::hash_one(&*NAME_KEYS, name)
}

impl Entry {
    pub fn new(name: &str, resource: Any) -> Entry {
        let hash = hash(&[&resource.value]);
        let digest = Sha256::new()
            .chain_update(name.as_bytes())
            .chain_update([0])
            .chain_update(hash.as_bytes())
            .finalize();
        let digest = u128::from_le_bytes(digest[..16].try_into().expect("16 of 32 bytes"));
        let mut encoded = Vec::with_capacity(message::encoded_len(RESOURCES_FIELD, &resource));
        message::encode(RESOURCES_FIELD, &resource, &mut encoded);
        Entry {
            any_at: encoded.len() - resource.encoded_len(),
            encoded: Bytes::from(encoded),
            hash,
            digest,
            name_key: name_key(name),
        }
    }

    /// Tells this resource's content apart from any other content of the same name.
    pub fn content_tag(&self) -> u64 {
        self.digest as u64
    }

    /// The resource as a `resources` field of a `DiscoveryResponse`.
    pub fn encoded(&self) -> &Bytes {
        &self.encoded
    }

    pub fn resource(&self) -> Any {
        // Bytes this Entry encoded itself.
        Any::decode(&self.encoded[self.any_at..]).unwrap_or_default()
    }
}

/// `DiscoveryResponse.resources`.
const RESOURCES_FIELD: u32 = 2;

/// One type's resources by name, and the version of the whole set. A proxy's set is
/// its own few resources over its namespace's shared set (`base`), which it does not copy.
#[derive(Debug, Clone, Default)]
pub struct TypeResources {
    base: Option<Arc<TypeResources>>,
    entries: BTreeMap<String, Arc<Entry>>,
    sum: u128,
    /// How many resources it has (its base's included): counted once, as every request
    /// of a delta stream asks.
    len: usize,
    pub version: String,
    /// Other names its resources answer to (a virtual host's `CONFIG/DOMAIN`s) → their
    /// names: worked out once, by the first stream that needs them, for every proxy
    /// that shares the set.
    aliases: OnceLock<HashMap<String, String>>,
    /// The set (its version) this one was patched from, and the names the patch
    /// replaced: a stream whose proxy holds none of them has nothing to be sent.
    pub patched_from: Option<(String, BTreeSet<String>)>,
}

impl PartialEq for TypeResources {
    fn eq(&self, other: &TypeResources) -> bool {
        self.version == other.version
    }
}

impl TypeResources {
    pub(crate) fn new(entries: BTreeMap<String, Arc<Entry>>) -> TypeResources {
        let sum = entries
            .values()
            .fold(0u128, |sum, e| sum.wrapping_add(e.digest));
        TypeResources {
            base: None,
            len: entries.len(),
            entries,
            sum,
            version: version(sum),
            aliases: OnceLock::new(),
            patched_from: None,
        }
    }

    fn of(resources: Vec<NamedResource>) -> TypeResources {
        TypeResources::new(resources.into_iter().map(entry).collect())
    }

    /// `over`'s resources on top of `base`'s (replacing those of the same name). One
    /// layer only: a layered `base` is flattened first.
    fn layered(base: &Arc<TypeResources>, over: &TypeResources) -> TypeResources {
        let base = match base.base {
            None => base.clone(),
            Some(_) => Arc::new(TypeResources::new(base.to_map())),
        };
        let mut sum = base.sum;
        let mut len = base.len;
        let mut entries = BTreeMap::new();
        for (name, entry) in over.iter() {
            match base.get(name) {
                Some(hidden) => sum = sum.wrapping_sub(hidden.digest),
                None => len += 1,
            }
            sum = sum.wrapping_add(entry.digest);
            entries.insert(name.clone(), entry.clone());
        }
        TypeResources {
            base: Some(base),
            len,
            entries,
            sum,
            version: version(sum),
            aliases: OnceLock::new(),
            patched_from: None,
        }
    }

    /// The names its resources answer to besides their own, as `find` works them out
    /// (once per set).
    pub fn aliases(
        &self,
        find: impl FnOnce(&TypeResources) -> HashMap<String, String>,
    ) -> &HashMap<String, String> {
        self.aliases.get_or_init(|| find(self))
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Entry>> {
        self.entries
            .get(name)
            .or_else(|| self.base.as_ref()?.entries.get(name))
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Every resource, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Arc<Entry>)> {
        let mut base = self.base.iter().flat_map(|b| b.entries.iter()).peekable();
        let mut own = self.entries.iter().peekable();
        std::iter::from_fn(move || match (base.peek(), own.peek()) {
            (Some((b, _)), Some((o, _))) if b < o => base.next(),
            (Some((b, _)), Some((o, _))) if b == o => {
                base.next();
                own.next()
            }
            (Some(_), None) => base.next(),
            _ => own.next(),
        })
    }

    /// Every resource, by name, in a map of its own.
    pub fn to_map(&self) -> BTreeMap<String, Arc<Entry>> {
        self.iter().map(|(n, e)| (n.clone(), e.clone())).collect()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.base.as_ref().is_none_or(|b| b.entries.is_empty())
    }
}

fn version(sum: u128) -> String {
    format!("{:016x}", (sum >> 64) as u64 ^ sum as u64)
}

fn entry(r: NamedResource) -> (String, Arc<Entry>) {
    let entry = Entry::new(&r.name, r.resource);
    (r.name, Arc::new(entry))
}

/// Every type's resources. Equal when every type's version is: versions hash content.
#[derive(Debug, Clone, Default)]
pub struct Generated {
    types: BTreeMap<ResourceType, Arc<TypeResources>>,
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

impl Generated {
    /// A proxy's resources, each type encoded once and versioned by content.
    pub fn new(mut resources: ProxyResources) -> Generated {
        let types = ResourceType::PUSH_ORDER
            .into_iter()
            .map(|t| (t, Arc::new(TypeResources::of(resources.take(t)))))
            .collect();
        Generated { types, parts: None }
    }

    /// A proxy's resources: `own` added to `shared`.
    pub fn compose(shared: &Arc<Generated>, own: ProxyResources) -> Generated {
        Generated::compose_parts(shared, Arc::new(Generated::new(own)), None)
    }

    /// These (composed) resources with `shared` in place of the shared part they were
    /// composed from, and `own` (if given) in place of their own part; `None` when they
    /// were not composed.
    pub fn recompose(
        &self,
        shared: &Arc<Generated>,
        own: Option<ProxyResources>,
    ) -> Option<Generated> {
        let parts = self.parts.as_ref()?;
        let own = match own {
            Some(own) => Arc::new(Generated::new(own)),
            None => parts.own.clone(),
        };
        Some(Generated::compose_parts(shared, own, Some(self)))
    }

    /// A type whose shared set is the one `earlier` was composed from, and whose own set
    /// is the same as `earlier`'s, keeps `earlier`'s set; a type `own` has nothing of is
    /// `shared`'s set itself.
    fn compose_parts(
        shared: &Arc<Generated>,
        own: Arc<Generated>,
        earlier: Option<&Generated>,
    ) -> Generated {
        let mut types = BTreeMap::new();
        for kind in ResourceType::PUSH_ORDER {
            let theirs = shared.types.get(&kind);
            let mine = own.types.get(&kind).filter(|t| !t.is_empty());
            let unchanged = earlier.and_then(|e| {
                let parts = e.parts.as_ref()?;
                let same_shared = match (parts.shared.types.get(&kind), theirs) {
                    (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                    (a, b) => a.is_none() && b.is_none(),
                };
                let version = |g: &Generated| g.types.get(&kind).map(|t| t.version.clone());
                let same_own = version(&parts.own) == version(&own);
                (same_shared && same_own)
                    .then(|| e.types.get(&kind).cloned())
                    .flatten()
            });
            let set = match (unchanged, theirs, mine) {
                (Some(set), _, _) => set,
                (None, Some(theirs), None) => theirs.clone(),
                (None, None, Some(mine)) => mine.clone(),
                (None, Some(theirs), Some(mine)) => Arc::new(TypeResources::layered(theirs, mine)),
                (None, None, None) => Arc::default(),
            };
            types.insert(kind, set);
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
        let kinds = [
            ResourceType::Cluster,
            ResourceType::OnDemandCluster,
            ResourceType::Endpoint,
        ];
        for kind in kinds {
            let Some(before) = self.types.get(&kind) else {
                continue;
            };
            let mut entries = before.to_map();
            entries.retain(|name, _| {
                names::parse_outbound_cluster(name).is_none_or(|(_, _, host)| !hosts.contains(host))
            });
            entries.extend(fresh.take(kind).into_iter().map(entry));
            let after = TypeResources::new(entries);
            if after.version != before.version {
                types.insert(kind, Arc::new(after));
            }
        }
        Generated { types, parts: None }
    }

    /// These (shared) resources with `routes` in place of their routes and virtual hosts
    /// (after a change to VirtualServices alone); a set that comes out the same stays
    /// the same `Arc`.
    pub fn with_routes(&self, mut routes: ProxyResources) -> Generated {
        let mut types = self.types.clone();
        for kind in [ResourceType::Route, ResourceType::VirtualHost] {
            let after = TypeResources::of(routes.take(kind));
            if self
                .types
                .get(&kind)
                .is_none_or(|before| before.version != after.version)
            {
                types.insert(kind, Arc::new(after));
            }
        }
        Generated { types, parts: None }
    }

    /// These (shared, on-demand) resources with the virtual hosts `fresh` (from
    /// [`fleetmesh_xds::patch_virtual_host_routes`]) in place of those of the same names,
    /// after a change to their VirtualServices alone. Their domains are the same (domains
    /// come from services), so the set's domain index carries over.
    pub fn with_virtual_hosts(&self, fresh: Vec<NamedResource>) -> Generated {
        let kind = ResourceType::VirtualHost;
        let mut types = self.types.clone();
        if let Some(before) = self.types.get(&kind) {
            let mut entries = before.to_map();
            let replaced = fresh.iter().map(|r| r.name.clone()).collect();
            entries.extend(fresh.into_iter().map(entry));
            let mut after = TypeResources::new(entries);
            if after.version != before.version {
                after.patched_from = Some((before.version.clone(), replaced));
                if let Some(aliases) = before.aliases.get() {
                    let _ = after.aliases.set(aliases.clone());
                }
                types.insert(kind, Arc::new(after));
            }
        }
        Generated { types, parts: None }
    }

    /// The resources of `kind`, if the proxy has that type at all.
    pub fn of_type(&self, kind: ResourceType) -> Option<&Arc<TypeResources>> {
        self.types.get(&kind)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn set(entries: &[(&str, &str)]) -> TypeResources {
        let resources = entries
            .iter()
            .map(|(name, content)| NamedResource {
                name: name.to_string(),
                resource: Any {
                    type_url: "t".into(),
                    value: content.as_bytes().to_vec(),
                },
            })
            .collect();
        TypeResources::of(resources)
    }

    fn listed(set: &TypeResources) -> Vec<(String, String)> {
        set.iter()
            .map(|(n, e)| (n.clone(), String::from_utf8(e.resource().value).unwrap()))
            .collect()
    }

    #[test]
    fn a_layered_set_is_the_flat_set_it_stands_for() {
        let base = Arc::new(set(&[("b", "1"), ("d", "2"), ("f", "3")]));
        let over = set(&[("a", "0"), ("d", "9"), ("g", "4")]);
        let layered = TypeResources::layered(&base, &over);
        let flat = set(&[("a", "0"), ("b", "1"), ("d", "9"), ("f", "3"), ("g", "4")]);
        assert_eq!(listed(&layered), listed(&flat));
        assert_eq!(
            layered.version, flat.version,
            "versions do not depend on layering"
        );
        assert_eq!(layered.len(), 5);
        assert!(layered.contains_key("b") && layered.contains_key("g"));
        assert_eq!(layered.get("d").unwrap().resource().value, b"9");
        assert_ne!(layered.version, base.version);

        let again = TypeResources::layered(&Arc::new(layered), &set(&[("b", "7")]));
        let flat = set(&[("a", "0"), ("b", "7"), ("d", "9"), ("f", "3"), ("g", "4")]);
        assert_eq!(listed(&again), listed(&flat), "layered over a layered set");
        assert_eq!(again.version, flat.version);
    }
}
