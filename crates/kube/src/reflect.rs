//! Watches that keep a local copy of a kind's objects (kube-rs reflectors): what meshd
//! reads of a cluster is read from these, never listed on every pass.

use fleetmesh_model::trigger::Event;
pub use fleetmesh_model::trigger::{Origin, Trigger};
use futures::StreamExt;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::reflector::{self, Store};
use kube::runtime::utils::Backoff;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;

/// How a broken watch retries: at once-ish, then doubling to at most 5 s. kube-rs's
/// default grows to 30 s, so after an outage of a minute meshd went on serving the
/// cluster's old config for up to half a minute after its API server was back. A failed
/// attempt every 5 s per watch costs a dead API server nothing.
#[derive(Debug, Clone)]
pub struct WatchRetry {
    next: Duration,
}

impl WatchRetry {
    const FIRST: Duration = Duration::from_millis(250);
    const MAX: Duration = Duration::from_secs(5);
}

impl Default for WatchRetry {
    fn default() -> WatchRetry {
        WatchRetry { next: Self::FIRST }
    }
}

impl Iterator for WatchRetry {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let wait = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        Some(wait)
    }
}

impl Backoff for WatchRetry {
    /// A watch that worked again starts over from the first wait.
    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

/// A reflector over `api`; each event signals `changes` as a change of `origin`.
pub fn watch<K>(
    api: Api<K>,
    dynamic: K::DynamicType,
    origin: Origin,
    changes: UnboundedSender<Trigger>,
) -> (Store<K>, JoinHandle<()>)
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Clone + Eq + std::hash::Hash + Send + Sync + 'static,
{
    reflect(api, dynamic, watcher::Config::default(), origin, changes)
}

/// Drops what meshd never reads but every object carries: the field managers' records
/// and kubectl's copy of the last applied object (together often half an object's size).
fn forget_unread_fields<K: Resource>(object: &mut K) {
    object.meta_mut().managed_fields = None;
    if let Some(annotations) = object.meta_mut().annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// A reflector over `api` with `config`; each event signals `changes` (once the store
/// holds it) as a change of `origin`: added, updated or deleted.
pub fn reflect<K>(
    api: Api<K>,
    dynamic: K::DynamicType,
    config: watcher::Config,
    origin: Origin,
    changes: UnboundedSender<Trigger>,
) -> (Store<K>, JoinHandle<()>)
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Clone + Eq + std::hash::Hash + Send + Sync + 'static,
{
    let kind = K::kind(&dynamic).to_string();
    let object_type = dynamic.clone();
    let writer = reflector::store::Writer::<K>::new(dynamic);
    let store = writer.as_reader();
    // Whether an object is new is known only before the store takes it, and the change
    // may be signalled only after (a push reads the store): the event of the object the
    // reflector is about to take waits here. The stream is polled in one place, so the
    // reflector yields each event right after this sees it.
    let before = store.clone();
    let seen: std::sync::Arc<parking_lot::Mutex<Option<Event>>> = Default::default();
    let noted = seen.clone();
    let objects = watcher(api, config)
        .modify(forget_unread_fields)
        .inspect(move |event| {
            *noted.lock() = event
                .as_ref()
                .ok()
                .and_then(|e| classify(&before, &object_type, e));
        });
    let stream = reflector::reflector(writer, objects).backoff(WatchRetry::default());
    let task = tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => {
                    if let Some(event) = seen.lock().take() {
                        let _ = changes.send(Trigger { origin, event });
                    }
                }
                Err(e) => tracing::warn!(%kind, error = %e, "watch failed; retrying within 5 s"),
            }
        }
    });
    (store, task)
}

/// What a watch event does to the objects `store` holds; `None` for the markers around
/// a (re)list, which change nothing themselves.
fn classify<K>(
    store: &Store<K>,
    object_type: &K::DynamicType,
    event: &watcher::Event<K>,
) -> Option<Event>
where
    K: Resource + Clone,
    K::DynamicType: Clone + Eq + std::hash::Hash,
{
    match event {
        watcher::Event::Apply(object) | watcher::Event::InitApply(object) => {
            let known = store
                .get(&ObjectRef::from_obj_with(object, object_type.clone()))
                .is_some();
            Some(if known { Event::Update } else { Event::Add })
        }
        watcher::Event::Delete(_) => Some(Event::Delete),
        watcher::Event::Init | watcher::Event::InitDone => None,
    }
}

/// Background tasks (watches, and what starts more of them) that end when this is
/// dropped: none outlives the source that reads what it keeps.
#[derive(Default)]
pub struct Tasks(Vec<JoinHandle<()>>);

impl Tasks {
    /// Adds `tasks` to those ended on drop.
    pub fn extend(&mut self, tasks: impl IntoIterator<Item = JoinHandle<()>>) {
        self.0.extend(tasks);
    }
}

impl From<Vec<JoinHandle<()>>> for Tasks {
    fn from(tasks: Vec<JoinHandle<()>>) -> Tasks {
        Tasks(tasks)
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_watch_retries_within_five_seconds_and_starts_over_once_it_works() {
        let mut retry = WatchRetry::default();
        let waits: Vec<u64> = retry
            .by_ref()
            .take(7)
            .map(|d| d.as_millis() as u64)
            .collect();
        assert_eq!(waits, [250, 500, 1000, 2000, 4000, 5000, 5000]);
        retry.reset();
        assert_eq!(retry.next(), Some(Duration::from_millis(250)));
    }
}
