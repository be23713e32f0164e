//! The names a stream's proxy asked for, of one type. Envoy asks for every cluster's
//! endpoints by name (a thousand names per sidecar in a mesh of a thousand services) and
//! meshd serves thousands of sidecars, so the names are kept as their keyed 64-bit hashes
//! ([`name_key`]: 8 bytes a name, against some 70 for the text in a set): a resource is
//! asked for when its entry's key, worked out once when it was generated, is in the set.
//! Only virtual hosts on demand are kept as text: their names say which host was called,
//! and are read (few: one per host a sidecar's app called).

use crate::generated::{Entry, name_key};
use std::collections::{BTreeSet, HashSet};

pub enum Subscribed {
    /// Keyed hashes of the names.
    Keys(HashSet<u64, foldhash::fast::RandomState>),
    /// The names themselves.
    Names(BTreeSet<String>),
}

impl Default for Subscribed {
    fn default() -> Subscribed {
        Subscribed::Keys(HashSet::default())
    }
}

impl Subscribed {
    /// An empty set that keeps the names' text.
    pub fn with_names() -> Subscribed {
        Subscribed::Names(BTreeSet::new())
    }

    /// Adds `name`; false if it was there.
    pub fn insert(&mut self, name: &str) -> bool {
        match self {
            Subscribed::Keys(keys) => keys.insert(name_key(name)),
            Subscribed::Names(names) => !names.contains(name) && names.insert(name.into()),
        }
    }

    pub fn remove(&mut self, name: &str) {
        match self {
            Subscribed::Keys(keys) => keys.remove(&name_key(name)),
            Subscribed::Names(names) => names.remove(name),
        };
    }

    pub fn len(&self) -> usize {
        match self {
            Subscribed::Keys(keys) => keys.len(),
            Subscribed::Names(names) => names.len(),
        }
    }

    /// Whether the resource `name`, generated as `entry`, was asked for.
    pub fn contains(&self, name: &str, entry: &Entry) -> bool {
        match self {
            Subscribed::Keys(keys) => keys.contains(&entry.name_key),
            Subscribed::Names(names) => names.contains(name),
        }
    }

    /// The names, if kept as text.
    pub fn names(&self) -> Option<&BTreeSet<String>> {
        match self {
            Subscribed::Keys(_) => None,
            Subscribed::Names(names) => Some(names),
        }
    }

    /// The names, if kept as text.
    pub fn names_mut(&mut self) -> Option<&mut BTreeSet<String>> {
        match self {
            Subscribed::Keys(_) => None,
            Subscribed::Names(names) => Some(names),
        }
    }
}

impl<S: AsRef<str>> FromIterator<S> for Subscribed {
    fn from_iter<I: IntoIterator<Item = S>>(names: I) -> Subscribed {
        Subscribed::Keys(names.into_iter().map(|n| name_key(n.as_ref())).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::Any;

    fn entry(name: &str) -> Entry {
        Entry::new(name, Any::default())
    }

    #[test]
    fn a_name_is_found_by_its_entry_in_either_form() {
        for mut subscribed in [Subscribed::default(), Subscribed::with_names()] {
            assert!(subscribed.insert("outbound|80||a.ns"));
            assert!(!subscribed.insert("outbound|80||a.ns"));
            assert!(subscribed.insert("outbound|80||b.ns"));
            assert_eq!(subscribed.len(), 2);
            let a = entry("outbound|80||a.ns");
            assert!(subscribed.contains("outbound|80||a.ns", &a));
            let c = entry("outbound|80||c.ns");
            assert!(!subscribed.contains("outbound|80||c.ns", &c));
            subscribed.remove("outbound|80||a.ns");
            assert!(!subscribed.contains("outbound|80||a.ns", &a));
            assert_eq!(subscribed.len(), 1);
        }
        let collected: Subscribed = ["x", "y"].into_iter().collect();
        assert!(collected.contains("y", &entry("y")));
        assert!(!collected.contains("z", &entry("z")));
    }
}
