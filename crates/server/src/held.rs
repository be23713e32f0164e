//! What a delta stream's proxy holds of one type, as compact as a stream can keep it:
//! every proxy holds thousands of names (a cluster and its endpoints per service) and
//! meshd thousands of streams. Names meshd sent are kept as 64-bit keyed hashes of the
//! name and a tag of the content (both worked out once per generated resource, not per
//! stream); the names themselves are in the generated sets they were
//! sent from, which the diff keeps (shared with every proxy of the namespace) to name
//! what is gone. Only names meshd did not send from those sets are kept as text: a
//! reconnecting proxy's initial versions, and removals held back (clusters wait for
//! listeners and routes).

use crate::changes::SetChanges;
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

    /// Whether `entry` was sent as it is. (A name claimed as it is counts once a diff
    /// has moved it here.)
    fn holds(&self, entry: &Entry) -> bool {
        self.sent.get(&entry.name_key) == Some(&entry.content_tag())
    }

    /// A diff against `sets` (the current set of the type, then any it is answered from
    /// besides): what of `wanted` the proxy lacks, and what it holds that no set has;
    /// both count as sent from now on.
    pub fn diff<'a>(
        &mut self,
        wanted: impl Iterator<Item = (&'a String, &'a Arc<Entry>)>,
        sets: Vec<Arc<TypeResources>>,
    ) -> (Vec<Resource>, Vec<String>) {
        let mut lacking: Vec<(&String, &Arc<Entry>)> = Vec::new();
        for (name, entry) in wanted {
            if self.named.get(name.as_str()) == Some(&entry.hash) {
                // Claimed as it is: held as if sent from these sets from now on.
                self.named.remove(name.as_str());
                self.sent.insert(entry.name_key, entry.content_tag());
            } else if !self.holds(entry) {
                lacking.push((name, entry));
            }
        }
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
            updated.push(self.send(name, entry));
        }
        self.from = sets;
        gone.sort();
        gone.dedup();
        (updated, gone)
    }

    /// The one set the last diff was made from, if all the proxy holds came from it
    /// (nothing held by name alone).
    pub fn last_set(&self) -> Option<&Arc<TypeResources>> {
        match &self.from[..] {
            [set] if self.named.is_empty() => Some(set),
            _ => None,
        }
    }

    /// The diff from [`Held::last_set`] to `to` when the names the proxy wants are as
    /// they were at the last diff (`wanted` says which): only what `changes` (from that
    /// set to `to`) names is looked at, not every name the proxy holds. What a diff
    /// of every name would give.
    pub fn diff_changes(
        &mut self,
        changes: &SetChanges,
        to: Arc<TypeResources>,
        wanted: impl Fn(&str, &Entry) -> bool,
    ) -> (Vec<Resource>, Vec<String>) {
        let mut updated = Vec::new();
        for (name, entry) in &changes.changed {
            if wanted(name, entry) && !self.holds(entry) {
                updated.push(self.send(name, entry));
            }
        }
        let gone = changes
            .removed
            .iter()
            .filter(|name| self.sent.remove(&name_key(name)).is_some())
            .cloned()
            .collect();
        self.from = vec![to];
        (updated, gone)
    }

    /// `entry` as a resource to send, held from now on.
    fn send(&mut self, name: &str, entry: &Entry) -> Resource {
        self.sent.insert(entry.name_key, entry.content_tag());
        Resource {
            name: name.to_string(),
            version: entry.hash.clone(),
            resource: Some(entry.resource()),
            ..Resource::default()
        }
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

    /// The diff of what changed and the diff of every name agree, over a sequence of
    /// sets: new, changed, unchanged, removed, unwanted and re-added names.
    #[test]
    fn a_diff_of_the_changes_is_a_diff_of_every_name() {
        let wanted = |name: &str, _: &Entry| name != "x";
        let sequence = [
            set(&[("a", "1"), ("b", "1"), ("c", "1"), ("x", "1")]),
            set(&[("a", "1"), ("b", "2"), ("c", "1"), ("x", "2")]),
            set(&[("a", "1"), ("c", "1"), ("d", "1"), ("x", "2")]),
            set(&[("b", "3"), ("c", "2")]),
            set(&[("a", "1"), ("b", "3"), ("c", "2")]),
        ];
        let changes = crate::changes::Changes::default();
        let (mut every, mut changed) = (Held::default(), Held::default());
        let first = &sequence[0];
        let all = |held: &mut Held, set: &Arc<TypeResources>| {
            let wanted = set.iter().filter(|(n, e)| wanted(n, e));
            held.diff(wanted, vec![set.clone()])
        };
        all(&mut every, first);
        all(&mut changed, first);
        for next in &sequence[1..] {
            let last = changed
                .last_set()
                .expect("one set, nothing by name")
                .clone();
            let (updated, removed) =
                changed.diff_changes(&changes.between(&last, next), next.clone(), wanted);
            let (expected, expected_removed) = all(&mut every, next);
            let names = |r: Vec<Resource>| r.into_iter().map(|r| r.name).collect::<Vec<_>>();
            assert_eq!(names(updated), names(expected));
            assert_eq!(removed, expected_removed);
        }
        assert!(changed.last_set().is_some());
    }

    #[test]
    fn a_reconnecting_proxys_versions_held_as_they_are_count_as_sent() {
        let current = set(&[("a", "1")]);
        let a = current.get("a").unwrap().hash.clone();
        let mut held = Held::claimed([("a".to_string(), a)]);
        assert_eq!(diff(&mut held, &current), (vec![], vec![]));
        assert!(held.last_set().is_some(), "nothing held by name alone");
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
