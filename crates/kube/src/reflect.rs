//! Watches that keep a local copy of a kind's objects (kube-rs reflectors): what meshd
//! reads of a cluster is read from these, never listed on every pass.

use futures::StreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;

/// A reflector over `api`; each event signals `changes`.
pub fn watch<K>(
    api: Api<K>,
    dynamic: K::DynamicType,
    changes: UnboundedSender<()>,
) -> (Store<K>, JoinHandle<()>)
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Clone + Eq + std::hash::Hash + Send + Sync + 'static,
{
    reflect(api, dynamic, watcher::Config::default(), changes)
}

/// Drops what meshd never reads but every object carries: the field managers' records
/// and kubectl's copy of the last applied object (together often half an object's size).
fn forget_unread_fields<K: Resource>(object: &mut K) {
    object.meta_mut().managed_fields = None;
    if let Some(annotations) = object.meta_mut().annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// A reflector over `api` with `config`; each event signals `changes`.
pub fn reflect<K>(
    api: Api<K>,
    dynamic: K::DynamicType,
    config: watcher::Config,
    changes: UnboundedSender<()>,
) -> (Store<K>, JoinHandle<()>)
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Clone + Eq + std::hash::Hash + Send + Sync + 'static,
{
    let kind = K::kind(&dynamic).to_string();
    let writer = reflector::store::Writer::<K>::new(dynamic);
    let store = writer.as_reader();
    let objects = watcher(api, config).modify(forget_unread_fields);
    let stream = reflector::reflector(writer, objects).default_backoff();
    let task = tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => {
                    let _ = changes.send(());
                }
                Err(e) => tracing::warn!(%kind, error = %e, "watch failed; retrying with backoff"),
            }
        }
    });
    (store, task)
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
