//! Which resources changed from one set of a type to another, and which went. The proxies of a
//! namespace move between the same two shared sets on each push, so the answer is
//! worked out once per pair of sets, not once per proxy.

use crate::generated::{Entry, TypeResources};
use parking_lot::Mutex;
use std::sync::{Arc, Weak};

/// Pairs remembered at most; the oldest are forgotten first.
const REMEMBERED: usize = 256;

#[derive(Default)]
pub struct Changes {
    known: Mutex<Vec<Known>>,
}

/// Holding `Weak`s keeps the sets' allocations, so no other set can take their address
/// while they are remembered.
struct Known {
    from: Weak<TypeResources>,
    to: Weak<TypeResources>,
    changed: Arc<SetChanges>,
}

/// What changed from one set to another.
#[derive(Debug, Default)]
pub struct SetChanges {
    /// The resources of the second set the first does not have as they are.
    pub changed: Vec<Changed>,
    /// The names of the first set the second does not have.
    pub removed: Vec<String>,
}

impl Changes {
    /// What changed from `from` to `to`.
    pub fn between(&self, from: &Arc<TypeResources>, to: &Arc<TypeResources>) -> Arc<SetChanges> {
        let same = |k: &Known| {
            Weak::ptr_eq(&k.from, &Arc::downgrade(from)) && Weak::ptr_eq(&k.to, &Arc::downgrade(to))
        };
        if let Some(known) = self.known.lock().iter().find(|k| same(k)) {
            return known.changed.clone();
        }
        let changed = Arc::new(changed(from, to));
        let mut known = self.known.lock();
        known.retain(|k| k.from.strong_count() > 0 && k.to.strong_count() > 0);
        if known.len() >= REMEMBERED {
            known.remove(0);
        }
        known.push(Known {
            from: Arc::downgrade(from),
            to: Arc::downgrade(to),
            changed: changed.clone(),
        });
        changed
    }
}

/// A resource new or changed between two sets, and its name.
pub type Changed = (String, Arc<Entry>);

/// Both sets are sorted by name: one pass over each.
fn changed(from: &TypeResources, to: &TypeResources) -> SetChanges {
    let mut before = from.iter().peekable();
    let mut removed = Vec::new();
    let changed = to
        .iter()
        .filter(|(name, entry)| {
            while let Some((old, _)) = before.next_if(|(old, _)| old < name) {
                removed.push(old.clone());
            }
            let kept = before
                .next_if(|(old, _)| old == name)
                .is_some_and(|(_, old)| Arc::ptr_eq(old, entry) || old.hash == entry.hash);
            !kept
        })
        .map(|(name, entry)| (name.clone(), entry.clone()))
        .collect();
    removed.extend(before.map(|(old, _)| old.clone()));
    SetChanges { changed, removed }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::Any;
    use std::collections::BTreeMap;

    fn set(entries: &[(&str, &str)]) -> Arc<TypeResources> {
        let entries: BTreeMap<String, Arc<Entry>> = entries
            .iter()
            .map(|(name, content)| {
                let resource = Any {
                    type_url: "t".into(),
                    value: content.as_bytes().to_vec(),
                };
                let entry = Entry::new(name, resource);
                (name.to_string(), Arc::new(entry))
            })
            .collect();
        Arc::new(TypeResources::new(entries))
    }

    fn contents(changed: &[Changed]) -> Vec<String> {
        changed
            .iter()
            .map(|(_, e)| String::from_utf8(e.resource().value).unwrap())
            .collect()
    }

    #[test]
    fn new_and_changed_resources_in_either_order() {
        let from = set(&[("b", "b1"), ("d", "d1"), ("f", "f1")]);
        let to = set(&[
            ("a", "a1"),
            ("b", "b1"),
            ("d", "d2"),
            ("e", "e1"),
            ("f", "f1"),
        ]);
        let changes = Changes::default();
        let forward = changes.between(&from, &to);
        assert_eq!(contents(&forward.changed), ["a1", "d2", "e1"]);
        assert!(forward.removed.is_empty());
        let back = changes.between(&to, &from);
        assert_eq!(contents(&back.changed), ["d1"]);
        assert_eq!(back.removed, ["a", "e"]);
        let last = changes.between(&to, &set(&[("b", "b1")]));
        assert_eq!(last.removed, ["a", "d", "e", "f"]);
    }

    #[test]
    fn one_answer_per_pair_of_sets() {
        let (from, to) = (set(&[("a", "1")]), set(&[("a", "2")]));
        let changes = Changes::default();
        let first = changes.between(&from, &to);
        assert!(Arc::ptr_eq(&first, &changes.between(&from, &to)));
        let other = set(&[("a", "2")]);
        assert!(!Arc::ptr_eq(&first, &changes.between(&from, &other)));
    }
}
