//! The managed data plane against a real API server, controller-manager and kwok: each
//! revision's DataPlaneControl is unset (the seed's check says NOT ready) until meshd has
//! reconciled it (then ready), its metrics count the pods that opted in with the seed's
//! annotation; a new proxy version rolls out by PDB-respecting evictions, one pod at a
//! time, never touching StatefulSets, DaemonSets, Jobs or hand-injected pods; a PDB that
//! allows nothing shows as an Error; a meshd that stops releases its Lease, one that
//! crashes mid-rollout is followed without a second eviction at once, and removing the
//! namespace's opt-in stops a rollout. One scenario (the cluster is slow to start) in named
//! steps. Pod IPs are fake and never receive a packet.

use fleetmesh_cli::install;
use fleetmesh_cli::install::manifests::Plan;
use fleetmesh_dataplane::DataPlaneControl;
use fleetmesh_dataplane::control::State;
use fleetmesh_dataplane::planner;
use fleetmesh_e2e::data_plane::{Addresses, budget, deployment, proxy_versions, start_meshd};
use fleetmesh_e2e::install_options;
use fleetmesh_inject::{Channel, InjectedBy, Revision, Settings, Template, labels, template};
use fleetmesh_kube::testing::{TestCluster, TestNamespace, wait_for};
use fleetmesh_meshd::Meshd;
use futures::StreamExt;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

/// The seed's readiness check, verbatim, with this cluster's kubectl.
const SEED_CHECK: &str = r#"if kubectl get dataplanecontrols -o custom-columns=REV:.spec.revision,STATUS:.status.state | grep rapid | grep -v none > /dev/null; then echo "Managed Data Plane is ready."; else echo "Managed Data Plane is NOT ready."; fi"#;

fn seed_check(cluster: &TestCluster) -> String {
    let kubectl = cluster.kubectl();
    let binary = std::path::Path::new(kubectl.get_program());
    let mut path = std::env::var("PATH").unwrap_or_default();
    if let Some(dir) = binary.parent().filter(|d| !d.as_os_str().is_empty()) {
        path = format!("{}:{path}", dir.display());
    }
    let output = Command::new("bash")
        .args(["-c", SEED_CHECK])
        .env("PATH", path)
        .env("KUBECONFIG", &cluster.kubeconfig)
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn kubectl(cluster: &TestCluster, args: &[&str]) {
    if let Err(error) = cluster.run_kubectl(args, None) {
        panic!("kubectl {args:?}: {error}");
    }
}

/// What the steps share: a cluster of its own (DataPlaneControls are cluster-wide) with
/// install's CRDs and DataPlaneControls, and the namespace the seed's command makes managed.
struct Scenario {
    cluster: TestCluster,
    client: kube::Client,
    controls: Api<DataPlaneControl>,
    shop: TestNamespace,
    pods: Api<Pod>,
    events: Api<k8s_openapi::api::events::v1::Event>,
    /// How install's webhooks inject the rapid revision.
    settings: Settings,
    /// meshd's config directory, kept across its restarts.
    dir: tempfile::TempDir,
}

impl Scenario {
    /// The CRDs and istio-system (with the DataPlaneControls), as install applies them:
    /// the seed's check says NOT ready.
    async fn start() -> Scenario {
        // A cluster of its own: DataPlaneControls are cluster-wide.
        let cluster = TestCluster::start("fleetmesh-dataplane").expect("the local cluster starts");
        let client = cluster.client().await.unwrap();
        let objects = fleetmesh_cli::install::manifests::render(
            &plan(),
            &fleetmesh_cli::install::manifests::ControlPlane {
                webhook_url: "https://127.0.0.1:9".into(),
                ca_bundle: String::new(),
                xds_address: "127.0.0.1:9".into(),
                trust_domain: "cluster.local".into(),
            },
            &fleetmesh_cli::install::manifests::Coexistence::default(),
        );
        // A cluster reused from an earlier run: start over without its DataPlaneControls and
        // webhooks (those would call a meshd that is gone).
        let webhooks: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
        let installed = ListParams::default().labels("fleetmesh.io/managed-by=fleetmesh-install");
        let _ = webhooks
            .delete_collection(&DeleteParams::default(), &installed)
            .await;
        let _ = Api::<DataPlaneControl>::all(client.clone())
            .delete_collection(&DeleteParams::default(), &ListParams::default())
            .await;
        // The CRDs and istio-system (with the DataPlaneControls), as install applies them.
        fleetmesh_kube::testing::apply(&client, None, &objects[0].yaml)
            .await
            .unwrap();
        let controls: Api<DataPlaneControl> = Api::all(client.clone());
        wait_for(
            "the DataPlaneControl CRD",
            Duration::from_secs(30),
            async || controls.list(&Default::default()).await.ok(),
        )
        .await
        .unwrap();
        fleetmesh_kube::testing::apply(&client, None, &objects[1].yaml)
            .await
            .unwrap();
        assert_eq!(seed_check(&cluster), "Managed Data Plane is NOT ready.");
        let (shop, settings) = managed_namespace(&cluster, &client).await;
        let pods: Api<Pod> = Api::namespaced(client.clone(), &shop.name);
        let events = Api::namespaced(client.clone(), &shop.name);
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("mesh")).unwrap();
        Scenario {
            cluster,
            client,
            controls,
            shop,
            pods,
            events,
            settings,
            dir,
        }
    }
}

/// A namespace the seed's command makes managed (earlier runs' are removed: their pods
/// would count too), and the settings install's webhooks inject its pods with.
async fn managed_namespace(
    cluster: &TestCluster,
    client: &kube::Client,
) -> (TestNamespace, Settings) {
    // Namespaces an earlier run left behind would count too.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for stale in namespaces.list(&ListParams::default()).await.unwrap().items {
        let name = stale.metadata.name.unwrap_or_default();
        if name.starts_with("managed-") {
            let _ = namespaces.delete(&name, &DeleteParams::default()).await;
        }
    }
    wait_for(
        "earlier runs' namespaces to be gone",
        Duration::from_secs(120),
        async || {
            let list = namespaces.list(&ListParams::default()).await.ok()?.items;
            let left = list
                .iter()
                .filter_map(|n| n.metadata.name.as_deref())
                .any(|n| n.starts_with("managed-"));
            (!left).then_some(())
        },
    )
    .await
    .unwrap();
    let shop = TestNamespace::create(client, "managed").await.unwrap();
    kubectl(
        cluster,
        &[
            "annotate",
            "--overwrite",
            "namespace",
            &shop.name,
            r#"mesh.cloud.google.com/proxy={"managed":"true"}"#,
        ],
    );
    let settings = Settings {
        revision: Revision::of(Channel::Rapid),
        xds_address: "127.0.0.1:9".into(),
        trust_domain: "cluster.local".into(),
        cluster_id: "dataplane".into(),
        cni_managed: true,
        injected_by: InjectedBy::Webhook,
        proxy_version: None,
        hub: fleetmesh_inject::DEFAULT_HUB.into(),
        delta_xds: false,
    };
    (shop, settings)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_readiness_check_follows_the_controller() {
    let s = Scenario::start().await;
    bare_pods_of_the_rapid_revision(&s).await;
    let meshd = the_seeds_check_turns_ready(&s).await;
    let bystanders = web_and_bystanders_on_version_a(&s, &meshd).await;
    version_b_rolls_out_within_the_budget(&s, &meshd).await;
    bystanders_and_bare_pods_are_never_evicted(&s, bystanders).await;
    a_budget_that_allows_nothing_is_an_error(&s).await;
    let meshd = a_restarted_meshd_evicts_no_pod_twice(&s, meshd).await;
    removing_the_opt_in_stops_a_rollout(&s).await;
    meshd.shutdown().await;
    s.shop.delete().await.unwrap();
}

/// Bare pods of the rapid revision in the managed namespace: one managed, one opted out,
/// one whose opt-in cannot be read.
async fn bare_pods_of_the_rapid_revision(s: &Scenario) {
    for (name, opt_in) in [
        ("managed", None),
        ("opted-out", Some(r#"{"managed":"false"}"#)),
        ("malformed", Some("yes please")),
    ] {
        let mut pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "app", "image": "app:v1"}]},
        }))
        .unwrap();
        if let Some(value) = opt_in {
            pod.metadata.annotations =
                Some([("mesh.cloud.google.com/proxy".to_string(), value.to_string())].into());
        }
        let injected = template::inject(&pod, Template::Sidecar, &s.settings).unwrap();
        s.pods
            .create(&PostParams::default(), &injected)
            .await
            .unwrap();
    }
}

/// meshd's controller reconciles: the seed's check turns ready. (Evictions paced at one
/// a second, for the rollouts below.) Bare pods are counted unmanaged (nothing would
/// replace them), and the unreadable opt-in is explained on its pod.
async fn the_seeds_check_turns_ready(s: &Scenario) -> Meshd {
    let meshd = start_meshd(s.dir.path(), &s.cluster, None, None).await;
    wait_for(
        "the seed's check to say ready",
        Duration::from_secs(30),
        async || (seed_check(&s.cluster) == "Managed Data Plane is ready.").then_some(()),
    )
    .await
    .unwrap();
    let rapid = s.controls.get("asm-managed-rapid").await.unwrap();
    let status = rapid.status.unwrap();
    let metrics = status.proxy_metrics.unwrap();
    // Bare pods: nothing would replace them, so the managed data plane leaves them be.
    assert_eq!((metrics.managed, metrics.unmanaged), (0, 3), "{metrics:?}");
    // The malformed annotation is explained on the pod.
    wait_for(
        "an InvalidProxyAnnotation Event on the pod",
        Duration::from_secs(30),
        async || explained(&s.events, "malformed").await.then_some(()),
    )
    .await
    .unwrap();
    assert!(metrics.namespaces_enabled >= 1);
    assert_eq!(status.proxy_target_basis_points, Some(10_000));
    assert_eq!(status.observed_generation, rapid.metadata.generation);
    meshd
}

/// Install's webhooks inject the DataPlaneControl's version A into a Deployment of 3 behind
/// a PDB of minAvailable 2, and into workloads a rollout must never evict: a StatefulSet,
/// a DaemonSet, a Job, a Deployment injected by hand, and Deployments whose pods opt out
/// or say something unreadable (returned).
async fn web_and_bystanders_on_version_a(s: &Scenario, meshd: &Meshd) -> Vec<Pod> {
    let output = tempfile::tempdir().unwrap();
    install::run(&install_options(plan(), &s.cluster, meshd, output.path()))
        .await
        .expect("install succeeds");
    kubectl(
        &s.cluster,
        &[
            "label",
            "namespace",
            &s.shop.name,
            "istio-injection-",
            "istio.io/rev=asm-managed-rapid",
            "--overwrite",
        ],
    );
    let hand_injected = fleetmesh_cli::kube_inject::inject_manifest(
        &deployment("handmade", 1, ""),
        "handmade.yaml",
        &Settings {
            injected_by: InjectedBy::KubeInject,
            ..s.settings.clone()
        },
    )
    .unwrap();
    let opted_out = deployment(
        "optout",
        1,
        r#"mesh.cloud.google.com/proxy: '{"managed":"false"}'"#,
    );
    let unreadable = deployment(
        "confused",
        1,
        r#"mesh.cloud.google.com/proxy: '{"managed":"yes"}'"#,
    );
    s.shop
        .apply(&format!(
            "{}---\n{}---\n{NEVER_EVICTED}---\n{opted_out}---\n{unreadable}---\n{hand_injected}",
            deployment("web", 3, ""),
            budget("minAvailable: 2")
        ))
        .await
        .unwrap();
    let version_a = Revision::of(Channel::Rapid).proxy_version;
    wait_for(
        "3 Ready web pods on version A",
        Duration::from_secs(60),
        async || (proxy_versions(&s.pods, "app=web").await == [version_a; 3]).then_some(()),
    )
    .await
    .unwrap();
    wait_for(
        "the bystanders' pods, on version A",
        Duration::from_secs(60),
        async || {
            let list = s.pods.list(&ListParams::default()).await.ok()?.items;
            let found: Vec<Pod> = list
                .into_iter()
                .filter(|p| {
                    let app = p.metadata.labels.as_ref().and_then(|l| l.get("app"));
                    app.is_some_and(|a| BYSTANDERS.contains(&a.as_str()))
                })
                .collect();
            let on_a = |p: &Pod| {
                p.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(labels::PROXY_VERSION))
                    == Some(&version_a.to_string())
            };
            (found.len() == BYSTANDERS.len() && found.iter().all(on_a)).then_some(found)
        },
    )
    .await
    .unwrap()
}

/// Bumping the version to B evicts the web pods one at a time, never below 2 Ready,
/// until all run B; the DataPlaneControl and the status page say Ready.
async fn version_b_rolls_out_within_the_budget(s: &Scenario, meshd: &Meshd) {
    let rollout = Watched::start(&s.pods, "app=web").await;
    set_version(&s.controls, "9.9.9-b").await;
    wait_for(
        "all 3 web pods Ready on B",
        Duration::from_secs(120),
        async || (proxy_versions(&s.pods, "app=web").await == ["9.9.9-b"; 3]).then_some(()),
    )
    .await
    .unwrap();
    let seen = rollout.stop();
    assert!(
        seen.fewest_ready >= 2,
        "the PDB held: never fewer than 2 Ready (saw {})",
        seen.fewest_ready
    );
    assert_eq!(seen.removed.len(), 3, "each pod on A evicted once");
    let metrics = wait_for(
        "the DataPlaneControl to be Ready on B",
        Duration::from_secs(30),
        async || {
            let status = s.controls.get("asm-managed-rapid").await.ok()?.status?;
            (status.state == Some(State::Ready)).then_some(status.proxy_metrics?)
        },
    )
    .await
    .unwrap();
    // Unmanaged: the 3 bare pods and the 6 bystanders.
    assert_eq!((metrics.managed, metrics.unmanaged), (3, 9), "{metrics:?}");
    assert_eq!(seed_check(&s.cluster), "Managed Data Plane is ready.");
    // The status page's data says the same.
    let page = format!("http://{}/debug/status", meshd.http_address());
    let rollout = wait_for(
        "the status page to show the rollout done",
        Duration::from_secs(30),
        async || {
            let status: serde_json::Value = reqwest::get(&page).await.ok()?.json().await.ok()?;
            // meshd's own cluster is the only one.
            let (_, revisions) = status["rollouts"].as_object()?.iter().next()?;
            let rollout = revisions["asm-managed-rapid"].clone();
            (rollout["state"] == "Ready").then_some(rollout)
        },
    )
    .await
    .unwrap();
    assert_eq!(rollout["proxyMetrics"]["managed"], 3, "{rollout}");
}

/// One evictor per cluster (this meshd holds the Lease); the bystanders and bare pods
/// were never evicted.
async fn bystanders_and_bare_pods_are_never_evicted(s: &Scenario, bystanders: Vec<Pod>) {
    let lease = Api::<Lease>::namespaced(s.client.clone(), "istio-system")
        .get("fleetmesh-data-plane")
        .await
        .unwrap();
    let holder = lease.spec.unwrap().holder_identity.unwrap();
    assert!(holder.starts_with("meshd-"), "{holder}");
    for pod in bystanders {
        let name = pod.metadata.name.clone().unwrap();
        let now = s.pods.get(&name).await.unwrap();
        assert!(
            now.metadata.uid == pod.metadata.uid && now.metadata.deletion_timestamp.is_none(),
            "{name} was never evicted"
        );
        assert_eq!(
            now.metadata.labels.unwrap()[labels::PROXY_VERSION],
            Revision::of(Channel::Rapid).proxy_version
        );
        if name.starts_with("confused-") {
            assert!(
                explained(&s.events, &name).await,
                "an Event explains {name}"
            );
        }
    }
    let (bare, opted_out) = (
        s.pods.get("managed").await.unwrap(),
        s.pods.get("opted-out").await.unwrap(),
    );
    assert!(
        bare.metadata.deletion_timestamp.is_none()
            && opted_out.metadata.deletion_timestamp.is_none(),
        "bare pods are never evicted"
    );
}

/// A PDB that allows no disruption: every eviction is refused, the status says why, and a
/// pod refused again and again says so.
async fn a_budget_that_allows_nothing_is_an_error(s: &Scenario) {
    s.shop.apply(&budget("maxUnavailable: 0")).await.unwrap();
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(s.client.clone(), &s.shop.name);
    wait_for(
        "the disruption controller to see the new PDB",
        Duration::from_secs(30),
        async || {
            let pdb = budgets.get("web").await.ok()?;
            let status = pdb.status?;
            (status.observed_generation == pdb.metadata.generation
                && status.disruptions_allowed == 0)
                .then_some(())
        },
    )
    .await
    .unwrap();
    set_version(&s.controls, "9.9.9-c").await;
    let error = wait_for(
        "the DataPlaneControl to report the PDB",
        Duration::from_secs(60),
        async || {
            let status = s.controls.get("asm-managed-rapid").await.ok()?.status?;
            (status.state == Some(State::Error)).then_some(status.error_details?.message)
        },
    )
    .await
    .unwrap();
    assert_eq!(error, "PodDisruptionBudgets are preventing upgrade");
    assert_eq!(
        proxy_versions(&s.pods, "app=web").await,
        ["9.9.9-b"; 3],
        "nothing was evicted"
    );
    // A pod refused again and again says so (after its third refusal, with backoff).
    let note = wait_for(
        "a DataPlaneUpgradeFailure Event on a web pod",
        Duration::from_secs(90),
        async || {
            let list = s.events.list(&ListParams::default()).await.ok()?.items;
            list.into_iter()
                .find(|e| {
                    e.reason.as_deref() == Some("DataPlaneUpgradeFailure")
                        && e.regarding
                            .as_ref()
                            .and_then(|r| r.name.as_deref())
                            .is_some_and(|n| n.starts_with("web-"))
                })?
                .note
        },
    )
    .await
    .unwrap();
    assert!(note.contains("disruption budget"), "{note}");
}

/// meshd restarted in the middle of a rollout resumes it without evicting twice (without
/// a PDB only the controller keeps to one pod of a Deployment at a time); stopping, it
/// gives the Lease up; crashing, it keeps it until it expires.
async fn a_restarted_meshd_evicts_no_pod_twice(s: &Scenario, meshd: Meshd) -> Meshd {
    let addresses = Addresses::of(&meshd);
    meshd.shutdown().await;
    // Stopping, it gave the Lease up: the next meshd need not wait for it to expire.
    let lease = Api::<Lease>::namespaced(s.client.clone(), "istio-system")
        .get("fleetmesh-data-plane")
        .await
        .unwrap();
    assert_eq!(lease.spec.unwrap().holder_identity, None, "released");
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(s.client.clone(), &s.shop.name);
    budgets
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    let rollout = Watched::start(&s.pods, "app=web").await;
    let meshd = start_meshd(s.dir.path(), &s.cluster, None, Some(&addresses)).await;
    wait_for(
        "the first eviction towards C",
        Duration::from_secs(60),
        async || (!rollout.seen().removed.is_empty()).then_some(()),
    )
    .await
    .unwrap();
    // Gone without a word, as in a crash: its tasks aborted, the Lease kept until it
    // expires.
    drop(meshd);
    let meshd = start_meshd(s.dir.path(), &s.cluster, None, Some(&addresses)).await;
    wait_for(
        "all 3 web pods Ready on C",
        Duration::from_secs(120),
        async || (proxy_versions(&s.pods, "app=web").await == ["9.9.9-c"; 3]).then_some(()),
    )
    .await
    .unwrap();
    let seen = rollout.stop();
    assert!(
        seen.fewest_ready >= 2,
        "one pod at a time across the restart (saw {} Ready)",
        seen.fewest_ready
    );
    assert_eq!(seen.removed.len(), 3, "the 3 pods on B evicted once each");
    meshd
}

/// The namespace's opt-in removed in the middle of a rollout: it stops there.
async fn removing_the_opt_in_stops_a_rollout(s: &Scenario) {
    let rollout = Watched::start(&s.pods, "app=web").await;
    set_version(&s.controls, "9.9.9-d").await;
    wait_for(
        "the first eviction towards D",
        Duration::from_secs(60),
        async || (!rollout.seen().removed.is_empty()).then_some(()),
    )
    .await
    .unwrap();
    kubectl(
        &s.cluster,
        &[
            "annotate",
            "namespace",
            &s.shop.name,
            "mesh.cloud.google.com/proxy-",
        ],
    );
    wait_for(
        "the DataPlaneControl to count no managed pods",
        Duration::from_secs(30),
        async || {
            let status = s.controls.get("asm-managed-rapid").await.ok()?.status?;
            (status.proxy_metrics?.managed == 0).then_some(())
        },
    )
    .await
    .unwrap();
    // Long enough for more evictions, had the rollout gone on (one per 2 s pass).
    tokio::time::sleep(Duration::from_secs(6)).await;
    let seen = rollout.stop();
    assert_eq!(
        seen.removed.len(),
        1,
        "no eviction after the opt-in was removed"
    );
    assert_eq!(
        proxy_versions(&s.pods, "app=web").await,
        ["9.9.9-c", "9.9.9-c", "9.9.9-d"]
    );
}

/// Whether pod `name` has an Event saying its opt-in annotation is unreadable.
async fn explained(events: &Api<k8s_openapi::api::events::v1::Event>, name: &str) -> bool {
    let list = events.list(&ListParams::default()).await;
    list.map(|l| l.items).unwrap_or_default().iter().any(|e| {
        e.reason.as_deref() == Some("InvalidProxyAnnotation")
            && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
    })
}

/// What a watch of some pods saw, every change in order: the fewest Ready (and not
/// terminating) at any moment, and which pods were removed (evicted).
#[derive(Default, Clone)]
struct Seen {
    fewest_ready: usize,
    removed: BTreeSet<String>,
}

struct Watched {
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Watched {
    /// Watches the pods `selector` picks; returns once the watch has listed them all.
    async fn start(pods: &Api<Pod>, selector: &str) -> Watched {
        let seen = Arc::new(Mutex::new(Seen {
            fewest_ready: usize::MAX,
            ..Seen::default()
        }));
        let (listed_tx, listed) = tokio::sync::oneshot::channel();
        let events = watcher::watcher(
            pods.clone(),
            watcher::Config::default()
                .labels(selector)
                // Not from the API server's cache, which may still hold pods gone since.
                .list_semantic(watcher::ListSemantic::MostRecent),
        );
        let record = seen.clone();
        let task = tokio::spawn(async move {
            let mut events = std::pin::pin!(events);
            let mut current: BTreeMap<String, Pod> = BTreeMap::new();
            let mut listed_tx = Some(listed_tx);
            while let Some(event) = events.next().await {
                let Ok(event) = event else { continue };
                let uid = |p: &Pod| p.metadata.uid.clone().unwrap_or_default();
                let mut seen = record.lock();
                match event {
                    watcher::Event::Init => current.clear(),
                    watcher::Event::InitApply(pod) => {
                        current.insert(uid(&pod), pod);
                    }
                    watcher::Event::InitDone => {
                        if let Some(tx) = listed_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    watcher::Event::Apply(pod) => {
                        if pod.metadata.deletion_timestamp.is_some() {
                            seen.removed.insert(uid(&pod));
                        }
                        current.insert(uid(&pod), pod);
                    }
                    watcher::Event::Delete(pod) => {
                        seen.removed.insert(uid(&pod));
                        current.remove(&uid(&pod));
                    }
                }
                if listed_tx.is_none() {
                    let ready = current
                        .values()
                        .filter(|p| p.metadata.deletion_timestamp.is_none() && planner::is_ready(p))
                        .count();
                    seen.fewest_ready = seen.fewest_ready.min(ready);
                }
            }
        });
        listed.await.expect("the watch lists the pods");
        Watched { seen, task }
    }

    fn seen(&self) -> Seen {
        self.seen.lock().clone()
    }

    fn stop(self) -> Seen {
        self.task.abort();
        self.seen()
    }
}

/// The apps of the workloads a rollout leaves alone: those of [`NEVER_EVICTED`], one
/// injected by hand, and Deployments whose pods opt out or say something unreadable.
const BYSTANDERS: [&str; 6] = ["db", "agent", "batch", "handmade", "optout", "confused"];

const NEVER_EVICTED: &str = r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 1
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec: {containers: [{name: db, image: db:v1}]}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec: {containers: [{name: agent, image: agent:v1}]}
---
apiVersion: batch/v1
kind: Job
metadata: {name: batch}
spec:
  template:
    metadata: {labels: {app: batch}}
    spec: {restartPolicy: Never, containers: [{name: batch, image: batch:v1}]}
"#;

fn plan() -> Plan {
    Plan {
        project: "p".into(),
        location: "l".into(),
        cluster: "dataplane".into(),
        channel: Channel::Rapid,
        cni_managed: true,
        hub: fleetmesh_inject::DEFAULT_HUB.into(),
    }
}

async fn set_version(controls: &Api<DataPlaneControl>, version: &str) {
    let patch = serde_json::json!({"spec": {"proxyVersion": version}});
    controls
        .patch(
            "asm-managed-rapid",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .unwrap();
}
