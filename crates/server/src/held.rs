//! What a delta stream's proxy holds of one type, as compact as a stream can keep it:
//! every proxy holds thousands of names (a cluster and its endpoints per service) and
//! meshd thousands of streams. Names meshd sent are kept as 64-bit keyed hashes of the
//! name and a tag of the content (both worked out once per generated resource, not per
//! stream); the names themselves are in the generated sets they were
//! sent from, which the diff keeps (shared with every proxy of the namespace) to name
//! what is gone. Only names meshd did not send from those sets are kept as text: a
//! reconnecting proxy's initial versions, and removals held back (clusters wait for
//! listeners and routes).

use crate::generated::{Entry, TypeResources, name_key};
use envoy_types::pb::envoy::service::discovery::v3::Resource;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

#[derive(Default)]
pub struct Held {
    /// Of names sent from `from`: [`name_key`] → [`Entry::content_tag`].
    sent: HashMap<u64, u64>,
    /// Names held that `from` may not have: name → content hash.
    named: BTreeMap<String, String>,
    /// The sets the last diff was made from.
    from: Vec<Arc<TypeResources>>,
}

impl Held {
    /// What a reconnecting proxy says it holds.
    pub fn claimed(versions: impl IntoIterator<Item = (String, String)>) -> Held {
        Held {
            named: versions.into_iter().collect(),
            ..Held::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.sent.is_empty() && self.named.is_empty()
    }

    /// The proxy no longer holds `name` (it unsubscribed, or must be sent it again).
    pub fn forget(&mut self, name: &str) {
        self.sent.remove(&name_key(name));
        self.named.remove(name);
    }

    fn holds(&self, name: &str, entry: &Entry) -> bool {
        self.sent.get(&entry.name_key) == Some(&entry.content_tag())
            || self.named.get(name) == Some(&entry.hash)
    }

    /// A diff against `sets` (the current set of the type, then any it is answered from
    /// besides): what of `wanted` the proxy lacks, and what it holds that no set has;
    /// both count as sent from now on.
    pub fn diff<'a>(
        &mut self,
        wanted: impl Iterator<Item = (&'a String, &'a Arc<Entry>)>,
        sets: Vec<Arc<TypeResources>>,
    ) -> (Vec<Resource>, Vec<String>) {
        let lacking: Vec<(&String, &Arc<Entry>)> = wanted
            .filter(|(name, entry)| !self.holds(name, entry))
            .collect();
        let in_sets = |name: &str| sets.iter().any(|set| set.contains_key(name));
        let mut gone: Vec<String> = Vec::new();
        // A set the diff is made from again has nothing that is gone.
        let earlier = self
            .from
            .iter()
            .filter(|old| !sets.iter().any(|set| Arc::ptr_eq(old, set)));
        for set in earlier {
            for (name, entry) in set.iter() {
                if !in_sets(name) && self.sent.remove(&entry.name_key).is_some() {
                    gone.push(name.clone());
                }
            }
        }
        self.named.retain(|name, _| {
            let kept = in_sets(name);
            if !kept {
                gone.push(name.clone());
            }
            kept
        });
        let mut updated = Vec::with_capacity(lacking.len());
        for (name, entry) in lacking {
            self.named.remove(name);
            self.sent.insert(entry.name_key, entry.content_tag());
            updated.push(Resource {
                name: name.clone(),
                version: entry.hash.clone(),
                resource: Some(entry.resource()),
                ..Resource::default()
            });
        }
        self.from = sets;
        gone.sort();
        gone.dedup();
        (updated, gone)
    }

    /// Removals the diff found but the stream holds back: still held, by name, until a
    /// later diff removes them.
    pub fn keep(&mut self, names: Vec<String>) {
        for name in names {
            self.named.insert(name, String::new());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::Any;

    fn set(resources: &[(&str, &str)]) -> Arc<TypeResources> {
        let entries = resources
            .iter()
            .map(|(name, content)| {
                let any = Any {
                    type_url: "t".into(),
                    value: content.as_bytes().to_vec(),
                };
                (name.to_string(), Arc::new(Entry::new(name, any)))
            })
            .collect();
        Arc::new(TypeResources::new(entries))
    }

    fn diff(held: &mut Held, current: &Arc<TypeResources>) -> (Vec<String>, Vec<String>) {
        let (updated, removed) = held.diff(current.iter(), vec![current.clone()]);
        (updated.into_iter().map(|r| r.name).collect(), removed)
    }

    #[test]
    fn what_was_sent_is_not_sent_again_and_what_went_is_named() {
        let mut held = Held::default();
        let first = set(&[("a", "1"), ("b", "1"), ("c", "1")]);
        assert_eq!(
            diff(&mut held, &first),
            (vec!["a".into(), "b".into(), "c".into()], vec![])
        );
        assert_eq!(diff(&mut held, &first), (vec![], vec![]));
        let second = set(&[("a", "1"), ("b", "2")]);
        assert_eq!(
            diff(&mut held, &second),
            (vec!["b".into()], vec!["c".into()])
        );
        held.forget("a");
        assert_eq!(diff(&mut held, &second), (vec!["a".into()], vec![]));
    }

    #[test]
    fn a_reconnecting_proxys_versions_are_kept_or_removed() {
        let current = set(&[("a", "1"), ("b", "1")]);
        let a = current.get("a").unwrap().hash.clone();
        let mut held = Held::claimed([
            ("a".to_string(), a),
            ("b".to_string(), "stale".to_string()),
            ("gone".to_string(), "1".to_string()),
        ]);
        assert_eq!(
            diff(&mut held, &current),
            (vec!["b".into()], vec!["gone".into()])
        );
        assert_eq!(
            diff(&mut held, &set(&[])),
            (vec![], vec!["a".into(), "b".into()])
        );
        assert!(held.is_empty());
    }

    #[test]
    fn removals_held_back_are_made_by_a_later_diff() {
        let mut held = Held::default();
        diff(&mut held, &set(&[("a", "1"), ("b", "1")]));
        let after = set(&[("a", "1")]);
        let (_, removed) = diff(&mut held, &after);
        assert_eq!(removed, ["b"]);
        held.keep(removed);
        assert_eq!(diff(&mut held, &after), (vec![], vec!["b".into()]));
        assert_eq!(diff(&mut held, &after), (vec![], vec![]));
    }
}
