//! The managed data plane's loop: whenever a watched pod, namespace or PodDisruptionBudget
//! changes (and at least every `interval`, which is what notices DataPlaneControl edits
//! and lets a paced eviction go) it reconciles each DataPlaneControl's status from the
//! cluster's pods and namespaces (kept by watches, not listed on every pass) (which
//! injected pods of its revision are managed, and whether those run the target proxy
//! version), publishes the target versions to the injector, and lets the executor evict
//! the next outdated pod when its pace allows. The status is written only when it
//! changes.
//!
//! It is one loop over the whole cluster rather than a kube-rs `Controller` reconciling
//! each DataPlaneControl alone, because its decisions are cluster-wide: one eviction per
//! pace across all revisions, and a pod's target depends on every DataPlaneControl.
//!
//! Versions move forward with meshd: the Lease holder sets each DataPlaneControl's
//! `spec.proxyVersion` to its channel table's version when that is newer (or unset), so
//! an upgraded meshd rolls managed pods and injects the new proxy into every new pod. A
//! meshd that finds a newer version than it knows (a newer replica set it) keeps it:
//! what everyone injects and rolls to is the DataPlaneControl's version.

use crate::control::{DataPlaneControl, DataPlaneControlStatus, ErrorDetails, ProxyMetrics, State};
use crate::executor::{Executor, PDB_MESSAGE};
use crate::leader::Leader;
use crate::opt_in::{self, OptIn};
use crate::planner::{self, Inputs, Skip};
use fleetmesh_inject::labels;
use fleetmesh_inject::versions::{ChannelTable, compare};
use fleetmesh_kube::reflect::{Origin, Trigger, watch};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Resource;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::reflector::Store;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;

/// How long the Lease holds without renewal (the loop renews every `interval`).
const LEASE_DURATION: Duration = Duration::from_secs(15);

/// How long a pass waits after a watched change for the changes that come with it (a
/// rollout changes many pods at once): one pass for a burst, not one per event.
const SETTLE: Duration = Duration::from_millis(250);

/// The proxy version each revision's pods should get (the DataPlaneControls'
/// `spec.proxyVersion`), for the injector; `None` until the DataPlaneControls were read
/// (the injector must not guess: a pod injected with another version would be evicted
/// again).
pub type ProxyVersions = tokio::sync::watch::Sender<Option<BTreeMap<String, String>>>;

/// What the injector follows of [`ProxyVersions`].
pub type ProxyVersionsWatch = tokio::sync::watch::Receiver<Option<BTreeMap<String, String>>>;

/// Each revision's rollout as its DataPlaneControl's status says (written by whichever
/// meshd holds the Lease), by revision.
pub type Rollouts = BTreeMap<String, DataPlaneControlStatus>;

/// What the controller tells the rest of meshd.
pub struct Published {
    /// For the injector.
    pub proxy_versions: ProxyVersions,
    /// For the status page.
    pub rollouts: tokio::sync::watch::Sender<Rollouts>,
}

/// Runs until `stop`, then releases the Lease if it holds it; evicts at most one pod per
/// `pace`; moves revisions forward to `table`'s versions.
pub async fn run(
    client: kube::Client,
    interval: Duration,
    pace: Duration,
    table: ChannelTable,
    published: Published,
    stop: CancellationToken,
) {
    let mut executor = Executor::new(client.clone(), pace);
    let leader = Leader::new(client.clone(), LEASE_DURATION);
    let mut reported = BTreeSet::new();
    let mut cluster = Watched::start(&client);
    tokio::select! {
        () = cluster.ready() => {}
        () = stop.cancelled() => return,
    }
    loop {
        let reconciled = reconcile_all(
            &client,
            &cluster,
            &table,
            &published,
            &leader,
            &mut executor,
            &mut reported,
        );
        tokio::select! {
            result = reconciled => if let Err(e) = result {
                tracing::warn!(error = %format!("{e:#}"), "managed data plane: reconcile failed (retrying)");
            },
            () = stop.cancelled() => break,
        }
        tokio::select! {
            () = cluster.changed(interval) => {}
            () = stop.cancelled() => break,
        }
    }
    leader.release().await;
}

/// The objects the plan reads, each kind kept by a watch, and the watches' change signals.
struct Watched {
    pods: Store<Pod>,
    namespaces: Store<Namespace>,
    budgets: Store<PodDisruptionBudget>,
    changes: UnboundedReceiver<Trigger>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Watched {
    fn start(client: &kube::Client) -> Watched {
        // Any change means a new pass, whatever it was: where it comes from is not read.
        const ANY: Origin = Origin::Global;
        let (sender, changes) = tokio::sync::mpsc::unbounded_channel();
        let (pods, pods_task) = watch(Api::all(client.clone()), (), ANY, sender.clone());
        let (namespaces, namespaces_task) =
            watch(Api::all(client.clone()), (), ANY, sender.clone());
        let (budgets, budgets_task) = watch(Api::all(client.clone()), (), ANY, sender);
        Watched {
            pods,
            namespaces,
            budgets,
            changes,
            tasks: vec![pods_task, namespaces_task, budgets_task],
        }
    }

    /// Returns once something watched changed (and the burst it came with settled), or
    /// after `interval` at the latest; the signals that came meanwhile are used up, as
    /// the next pass reads them all.
    async fn changed(&mut self, interval: Duration) {
        match tokio::time::timeout(interval, self.changes.recv()).await {
            Ok(Some(_)) => tokio::time::sleep(SETTLE).await,
            // Every watch ended (they end only with this): back to the interval alone.
            Ok(None) => tokio::time::sleep(interval).await,
            Err(_elapsed) => {}
        }
        while self.changes.try_recv().is_ok() {}
    }

    /// Once every watch has listed its kind.
    async fn ready(&self) {
        let _ = self.pods.wait_until_ready().await;
        let _ = self.namespaces.wait_until_ready().await;
        let _ = self.budgets.wait_until_ready().await;
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Copies of what a store holds now (the plan reads plain slices).
fn current<K: kube::Resource + Clone>(store: &Store<K>) -> Vec<K>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    store
        .state()
        .iter()
        .map(|object| (**object).clone())
        .collect()
}

async fn reconcile_all(
    client: &kube::Client,
    cluster: &Watched,
    table: &ChannelTable,
    published: &Published,
    leader: &Leader,
    executor: &mut Executor,
    reported: &mut BTreeSet<String>,
) -> anyhow::Result<()> {
    let controls: Api<DataPlaneControl> = Api::all(client.clone());
    let controls = match controls.list(&ListParams::default()).await {
        Ok(list) => list.items,
        // The CRD is not installed (yet): nothing to reconcile, every revision injects
        // its channel's version.
        Err(kube::Error::Api(status)) if status.code == 404 => {
            publish(&published.proxy_versions, Some(table.proxy_versions()));
            publish(&published.rollouts, Rollouts::new());
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let rollouts: Rollouts = controls
        .iter()
        .filter_map(|c| Some((c.spec.revision.clone(), c.status.clone()?)))
        .collect();
    publish(&published.rollouts, rollouts);
    let targets: BTreeMap<String, String> = controls
        .iter()
        .filter_map(|c| Some((c.spec.revision.clone(), target_version(c, table)?)))
        .collect();
    let mut injected = table.proxy_versions();
    injected.extend(targets.clone());
    publish(&published.proxy_versions, Some(injected));
    // Only the Lease holder moves versions, evicts and writes status.
    if controls.is_empty() || !leader.hold().await {
        return Ok(());
    }
    if advance(client, &controls, table).await {
        // The next pass reads the new versions, and reports on them.
        return Ok(());
    }
    let pods = current(&cluster.pods);
    let namespaces = current(&cluster.namespaces);
    let budgets = current(&cluster.budgets);
    let opt_ins = namespace_opt_ins(&namespaces);
    report_malformed(executor, reported, &namespaces, &pods).await;
    let backing_off = executor.backing_off();
    let evicted = executor.evicted().clone();
    let inputs = Inputs {
        pods: &pods,
        namespaces: &opt_ins,
        budgets: &budgets,
        targets: &targets,
        evicted: &evicted,
        backing_off: &backing_off,
    };
    let blocked = executor.blocked(&inputs);
    let statuses: Vec<DataPlaneControlStatus> = controls
        .iter()
        .map(|c| compute_status(c, &inputs, blocked.contains(&c.spec.revision)))
        .collect();
    // Revisions that reached their share (`proxyTargetBasisPoints`) evict nothing more.
    let rolling: BTreeMap<String, String> = controls
        .iter()
        .zip(&statuses)
        .filter(|(_, status)| status.state != Some(State::Ready))
        .filter_map(|(c, _)| {
            Some((
                c.spec.revision.clone(),
                targets.get(&c.spec.revision)?.clone(),
            ))
        })
        .collect();
    executor
        .step(&Inputs {
            targets: &rolling,
            ..inputs
        })
        .await;
    let api: Api<DataPlaneControl> = Api::all(client.clone());
    for (control, status) in controls.iter().zip(statuses) {
        if control.status.as_ref() == Some(&status) {
            continue;
        }
        let name = control.metadata.name.clone().unwrap_or_default();
        let patch = serde_json::json!({"status": status});
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        tracing::info!(revision = %control.spec.revision, state = ?status.state, "managed data plane status");
    }
    Ok(())
}

/// Tells `sender`'s followers `value`, if it is news to them.
fn publish<T: PartialEq>(sender: &tokio::sync::watch::Sender<T>, value: T) {
    sender.send_if_modified(|current| {
        let changed = *current != value;
        *current = value;
        changed
    });
}

/// The version a revision's managed pods should run: its DataPlaneControl's, or, while
/// that names none, the channel table's.
fn target_version(control: &DataPlaneControl, table: &ChannelTable) -> Option<String> {
    control.spec.proxy_version.clone().or_else(|| {
        table
            .proxy_version(&control.spec.revision)
            .map(str::to_string)
    })
}

/// The version `control` should be moved to: `table`'s, when it names none or an older
/// one.
fn advanced_version<'t>(control: &DataPlaneControl, table: &'t ChannelTable) -> Option<&'t str> {
    let known = table.proxy_version(&control.spec.revision)?;
    match &control.spec.proxy_version {
        Some(current) if compare(current, known).is_ge() => None,
        _ => Some(known),
    }
}

/// Moves each revision forward to this meshd's channel table (the next pass rolls to
/// it); whether it moved any.
async fn advance(
    client: &kube::Client,
    controls: &[DataPlaneControl],
    table: &ChannelTable,
) -> bool {
    let api: Api<DataPlaneControl> = Api::all(client.clone());
    let mut moved = false;
    for control in controls {
        let Some(version) = advanced_version(control, table) else {
            continue;
        };
        let name = control.metadata.name.clone().unwrap_or_default();
        let from = control.spec.proxy_version.as_deref().unwrap_or("none");
        let patch = serde_json::json!({"spec": {"proxyVersion": version}});
        let revision = &control.spec.revision;
        // A refusal (an install older than this meshd, without the right) leaves the
        // version where it is; the rest of the pass goes on.
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                tracing::info!(%revision, %from, to = %version, "managed data plane: proxy version advanced");
                moved = true;
            }
            Err(error) => {
                tracing::warn!(%revision, %from, to = %version, %error, "managed data plane: cannot advance the proxy version (re-run install to grant it)");
            }
        }
    }
    moved
}

/// Each namespace's opt-in.
pub fn namespace_opt_ins(namespaces: &[Namespace]) -> BTreeMap<String, OptIn> {
    namespaces
        .iter()
        .filter_map(|n| {
            let name = n.metadata.name.clone()?;
            Some((name, opt_in::parse(annotation(&n.metadata))))
        })
        .collect()
}

/// A Warning Event on each object whose opt-in annotation is unreadable (once per
/// version of the object).
async fn report_malformed(
    executor: &Executor,
    reported: &mut BTreeSet<String>,
    namespaces: &[Namespace],
    pods: &[Pod],
) {
    let objects = namespaces
        .iter()
        .map(|n| (&n.metadata, n.object_ref(&())))
        .chain(pods.iter().map(|p| (&p.metadata, p.object_ref(&()))));
    for (meta, reference) in objects {
        let OptIn::Malformed(reason) = opt_in::parse(annotation(meta)) else {
            continue;
        };
        let key = format!(
            "{:?}/{:?}/{:?}@{:?}",
            reference.kind, meta.namespace, meta.name, meta.resource_version
        );
        if reported.insert(key) {
            executor
                .warn(&reference, "InvalidProxyAnnotation", &reason)
                .await;
        }
    }
}

/// The status `control` should have. Its pods are the injected pods of its revision;
/// managed are those the rollout may replace (opted in, owned by a ReplicaSet, not
/// injected by hand...); `blocked`: every outdated pod's eviction was refused lately.
pub fn compute_status(
    control: &DataPlaneControl,
    inputs: &Inputs,
    blocked: bool,
) -> DataPlaneControlStatus {
    let revision = control.spec.revision.as_str();
    let mut metrics = ProxyMetrics {
        namespaces_enabled: inputs
            .namespaces
            .values()
            .filter(|o| **o == OptIn::Managed(true))
            .count() as u32,
        ..ProxyMetrics::default()
    };
    let mut outdated = 0u32;
    for pod in inputs.pods {
        let meta = &pod.metadata;
        let of_revision = meta
            .labels
            .as_ref()
            .and_then(|l| l.get(labels::REVISION))
            .is_some_and(|r| r == revision);
        if !of_revision {
            continue;
        }
        if opt_in::parse(annotation(meta)) == OptIn::Managed(true) {
            metrics.pods_enabled += 1;
        }
        match planner::candidate(pod, inputs) {
            Ok(_) => {
                metrics.managed += 1;
                outdated += 1;
            }
            Err(Skip::OnTarget) => metrics.managed += 1,
            Err(Skip::NoProxy | Skip::Terminating) => {}
            Err(_) => metrics.unmanaged += 1,
        }
    }
    // Nothing managed: nothing off target.
    let achieved = ((metrics.managed - outdated) * 10_000)
        .checked_div(metrics.managed)
        .unwrap_or(10_000);
    let wanted = control.spec.proxy_target_basis_points.unwrap_or(10_000);
    let (state, error_details) = if achieved >= wanted {
        (State::Ready, None)
    } else if blocked {
        let details = ErrorDetails {
            code: "PDB_BLOCKED".into(),
            message: PDB_MESSAGE.into(),
        };
        (State::Error, Some(details))
    } else {
        (State::Reconciling, None)
    };
    DataPlaneControlStatus {
        state: Some(state),
        error_details,
        proxy_target_basis_points: Some(achieved),
        observed_generation: control.metadata.generation,
        proxy_metrics: Some(metrics),
    }
}

fn annotation(meta: &kube::api::ObjectMeta) -> Option<&str> {
    meta.annotations
        .as_ref()?
        .get(opt_in::ANNOTATION)
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetmesh_inject::Revision;
    use serde_json::json;

    #[test]
    fn versions_only_move_forward() {
        let table =
            ChannelTable::with([("asm-managed-rapid".into(), "1.5.0".into())].into()).unwrap();
        let mut unset = control("x");
        unset.spec.proxy_version = None;
        assert_eq!(advanced_version(&unset, &table), Some("1.5.0"));
        assert_eq!(target_version(&unset, &table).as_deref(), Some("1.5.0"));
        assert_eq!(advanced_version(&control("1.4.9"), &table), Some("1.5.0"));
        assert_eq!(advanced_version(&control("1.5.0"), &table), None);
        // A newer meshd set it: kept, and what pods get.
        let newer = control("1.6.0-rc.1");
        assert_eq!(advanced_version(&newer, &table), None);
        assert_eq!(
            target_version(&newer, &table).as_deref(),
            Some("1.6.0-rc.1")
        );
    }

    fn control(version: &str) -> DataPlaneControl {
        let mut control =
            crate::control::for_revision(Revision::named("asm-managed-rapid").unwrap());
        control.spec.proxy_version = Some(version.into());
        control
    }

    fn pod(namespace: &str, version: &str, opt_in: Option<&str>, replicated: bool) -> Pod {
        let mut annotations = json!({"sidecar.istio.io/status": "{}"});
        if let Some(value) = opt_in {
            annotations[opt_in::ANNOTATION] = value.into();
        }
        let owners = if replicated {
            json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-abc12", "uid": "u", "controller": true}])
        } else {
            json!([])
        };
        serde_json::from_value(json!({
            "metadata": {"namespace": namespace, "name": format!("web-{version}"),
                         "annotations": annotations, "ownerReferences": owners,
                         "labels": {"istio.io/rev": "asm-managed-rapid", "fleetmesh.io/proxy-version": version}},
        }))
        .unwrap()
    }

    fn namespace(name: &str, opt_in: Option<&str>) -> Namespace {
        let annotations = opt_in.map(|v| json!({ opt_in::ANNOTATION: v }));
        serde_json::from_value(json!({"metadata": {"name": name, "annotations": annotations}}))
            .unwrap()
    }

    fn status(
        target: &str,
        pods: &[Pod],
        namespaces: &[Namespace],
        blocked: bool,
    ) -> DataPlaneControlStatus {
        let control = control(target);
        let targets = [(control.spec.revision.clone(), target.to_string())].into();
        let namespaces = namespace_opt_ins(namespaces);
        let inputs = Inputs {
            pods,
            namespaces: &namespaces,
            budgets: &[],
            targets: &targets,
            evicted: &BTreeMap::new(),
            backing_off: &BTreeSet::new(),
        };
        compute_status(&control, &inputs, blocked)
    }

    #[test]
    fn counts_managed_pods_and_the_share_on_target() {
        let namespaces = [
            namespace("shop", Some(r#"{"managed":"true"}"#)),
            namespace("other", None),
        ];
        let pods = [
            pod("shop", "1.0", None, true),
            pod("shop", "0.9", None, true),
            pod("shop", "0.9", Some(r#"{"managed":"false"}"#), true),
            pod("shop", "0.9", None, false),
            pod("other", "0.9", None, true),
            pod("other", "1.0", Some(r#"{"managed":"true"}"#), true),
        ];
        let now = status("1.0", &pods, &namespaces, false);
        assert_eq!(
            now.proxy_metrics,
            Some(ProxyMetrics {
                managed: 3,
                unmanaged: 3,
                namespaces_enabled: 1,
                pods_enabled: 1
            }),
            "a bare pod is not managed: nothing could replace it"
        );
        assert_eq!(now.proxy_target_basis_points, Some(6666));
        assert_eq!(now.state, Some(State::Reconciling));
        assert_eq!(
            status("0.9", &pods[1..5], &namespaces, false).state,
            Some(State::Ready)
        );
        let blocked = status("1.0", &pods, &namespaces, true);
        assert_eq!(blocked.state, Some(State::Error));
        assert_eq!(blocked.error_details.unwrap().message, PDB_MESSAGE);
    }
}
