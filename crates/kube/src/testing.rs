//! A real Kubernetes control plane for tests: kube-apiserver, etcd, controller-manager,
//! scheduler and kwok, started by `scripts/kube-local` on loopback ports. Pods become
//! Running with IPs from 198.18.0.0/22, which exist only in the API: no test may send a
//! packet to one.

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::{Event, Namespace, Pod, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A running local cluster.
pub struct TestCluster {
    /// As `scripts/kube-local` knows it.
    pub name: String,
    /// Its admin kubeconfig.
    pub kubeconfig: PathBuf,
    script: PathBuf,
}

impl TestCluster {
    /// Starts cluster `name` (or reuses it if it already runs). Builds the binaries on
    /// first use, which takes long; CI builds them before the tests.
    pub fn start(name: &str) -> anyhow::Result<TestCluster> {
        TestCluster::start_with(name, &[], &[])
    }

    /// Starts cluster `name` giving pods addresses from `cidr` (a part of 198.18.0.0/15,
    /// which never receives a packet): clusters of one mesh have disjoint pod ranges.
    pub fn start_with_pod_cidr(name: &str, cidr: &str) -> anyhow::Result<TestCluster> {
        TestCluster::start_with(name, &[], &[("KUBE_LOCAL_POD_CIDR", cidr)])
    }

    /// Starts cluster `name` with a real node (`scripts/kube-node`): pods run for real,
    /// from images imported with [`TestCluster::load_images`]. One per machine.
    pub fn start_with_real_node(name: &str) -> anyhow::Result<TestCluster> {
        TestCluster::start_with(name, &["--real-node"], &[])
    }

    fn start_with(
        name: &str,
        options: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<TestCluster> {
        let script = repo_root().join("scripts/kube-local");
        let output = Command::new(&script)
            .args(["start", name])
            .args(options)
            .envs(env.iter().copied())
            .output()
            .with_context(|| format!("running {}", script.display()))?;
        if !output.status.success() {
            bail!(
                "could not start local cluster {name}: {}\n(hint: scripts/kube-build builds the Kubernetes binaries; its log is above)",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let kubeconfig = PathBuf::from(
            String::from_utf8(output.stdout)?
                .lines()
                .last()
                .unwrap_or_default()
                .trim(),
        );
        Ok(TestCluster {
            name: name.into(),
            kubeconfig,
            script,
        })
    }

    /// Starts (or reuses) cluster `name` with fleetmesh's Istio CRDs served; returns it
    /// with an admin client.
    pub async fn start_with_istio(name: &str) -> anyhow::Result<(TestCluster, Client)> {
        let cluster = TestCluster::start(name)?;
        cluster.install_istio_crds().await?;
        let client = cluster.client().await?;
        Ok((cluster, client))
    }

    /// A client of the cluster as its admin.
    pub async fn client(&self) -> anyhow::Result<Client> {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig)?;
        let config =
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        Ok(Client::try_from(config)?)
    }

    /// Imports OCI image archives into the real node's containerd.
    pub fn load_images(&self, archives: &[PathBuf]) -> anyhow::Result<()> {
        let args = archives.iter().map(|a| a.as_os_str());
        self.node_command("load-images", args)
            .with_context(|| format!("loading images into {}", self.name))
    }

    /// Gives the real node's imported `image` the name `new` too (a second proxy version
    /// of one build, for upgrade tests).
    pub fn tag_image(&self, image: &str, new: &str) -> anyhow::Result<()> {
        self.node_command("tag-image", [image, new].map(std::ffi::OsStr::new))
            .with_context(|| format!("tagging {image} as {new} in {}", self.name))
    }

    /// `scripts/kube-local COMMAND NAME ARGS...` for this cluster's real node.
    fn node_command<'a>(
        &self,
        command: &str,
        args: impl IntoIterator<Item = &'a std::ffi::OsStr>,
    ) -> anyhow::Result<()> {
        let output = Command::new(&self.script)
            .args([command, &self.name])
            .args(args)
            .output()?;
        if !output.status.success() {
            bail!("{}", String::from_utf8_lossy(&output.stderr));
        }
        Ok(())
    }

    /// Stops the cluster and removes everything it made on this machine.
    pub fn stop(&self) -> anyhow::Result<()> {
        TestCluster::stop_named(&self.name)
    }

    /// Stops cluster `name` if it runs (nothing to do otherwise).
    pub fn stop_named(name: &str) -> anyhow::Result<()> {
        let status = Command::new(repo_root().join("scripts/kube-local"))
            .args(["stop", name])
            .status()?;
        if !status.success() {
            bail!("stopping {name} failed");
        }
        Ok(())
    }

    /// Stops kube-apiserver and starts it again (etcd and the rest keep running).
    pub fn restart_apiserver(&self) -> anyhow::Result<()> {
        self.apiserver("restart-apiserver")
    }

    /// Stops kube-apiserver alone: the cluster's control plane is unreachable until
    /// [`TestCluster::start_apiserver`].
    pub fn stop_apiserver(&self) -> anyhow::Result<()> {
        self.apiserver("stop-apiserver")
    }

    /// Starts kube-apiserver again after [`TestCluster::stop_apiserver`], on the same
    /// address, and waits until it answers.
    pub fn start_apiserver(&self) -> anyhow::Result<()> {
        self.apiserver("start-apiserver")
    }

    fn apiserver(&self, command: &str) -> anyhow::Result<()> {
        let status = Command::new(&self.script)
            .args([command, &self.name])
            .status()?;
        if !status.success() {
            bail!("{command} of {} failed", self.name);
        }
        Ok(())
    }

    /// Applies fleetmesh's Istio CRDs (`manifests/istio-crds.yaml`) and waits until the
    /// API server serves them.
    pub async fn install_istio_crds(&self) -> anyhow::Result<()> {
        let client = self.client().await?;
        apply(&client, None, &crate::crds::istio_crds_yaml()).await?;
        let names = crate::crds::KINDS
            .iter()
            .map(|kind| format!("{}.{}", kind.plural, kind.group));
        Ok(crate::apply::wait_established(&client, names, Duration::from_secs(30)).await?)
    }

    /// Runs kubectl on this cluster with `stdin` as its input; its output, or its error
    /// output when it fails.
    pub fn run_kubectl(&self, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
        use std::io::Write;
        let mut child = self
            .kubectl()
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        let mut input = child.stdin.take().expect("stdin is piped");
        input
            .write_all(stdin.unwrap_or_default().as_bytes())
            .map_err(|e| e.to_string())?;
        drop(input);
        let output = child.wait_with_output().map_err(|e| e.to_string())?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }

    /// A kubectl command for this cluster.
    pub fn kubectl(&self) -> Command {
        let bin = self
            .kubeconfig
            .parent()
            .map(|d| d.join("bin.env"))
            .and_then(|p| std::fs::read_to_string(p).ok());
        let kubectl = bin
            .and_then(|b| {
                b.trim()
                    .strip_prefix("BIN=")
                    .map(|d| Path::new(d).join("kubectl"))
            })
            .unwrap_or_else(|| "kubectl".into());
        let mut command = Command::new(kubectl);
        command.arg("--kubeconfig").arg(&self.kubeconfig);
        command
    }
}

/// A namespace of its own for one test; `delete()` removes it with everything in it.
pub struct TestNamespace {
    /// The namespace's generated name.
    pub name: String,
    client: Client,
}

impl TestNamespace {
    /// The client it was created with.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Creates `PREFIX-PID-N-TIME`: unique across parallel tests and runs.
    pub async fn create(client: &Client, prefix: &str) -> anyhow::Result<TestNamespace> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_micros())
            .unwrap_or(0);
        let name = format!(
            "{prefix}-{}-{}-{time:x}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let namespace: Namespace = serde_yaml_ng::from_str(&format!("metadata: {{name: {name}}}"))?;
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await?;
        // Pods are admitted only once the controller-manager gave the namespace its
        // `default` ServiceAccount; a Deployment applied earlier backs off for long.
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &name);
        wait_for(
            "the namespace's default ServiceAccount",
            Duration::from_secs(60),
            async || accounts.get_opt("default").await.ok().flatten(),
        )
        .await?;
        Ok(TestNamespace {
            name,
            client: client.clone(),
        })
    }

    /// Server-side applies every document of `yaml` into this namespace (cluster-scoped
    /// kinds as they are).
    pub async fn apply(&self, yaml: &str) -> anyhow::Result<()> {
        apply(&self.client, Some(&self.name), yaml).await
    }

    /// What a person would look at when pods do not come up: each pod's phase and
    /// conditions, and the namespace's recent events (scheduling, admission, back-off).
    pub async fn diagnosis(&self) -> String {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.name);
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.name);
        let mut lines = vec![format!("namespace {}:", self.name)];
        match pods.list(&ListParams::default()).await {
            Ok(list) if list.items.is_empty() => lines.push("  no pods".into()),
            Ok(list) => lines.extend(list.items.iter().map(pod_summary)),
            Err(error) => lines.push(format!("  pods not listed: {error}")),
        }
        match events.list(&ListParams::default()).await {
            Ok(list) => lines.extend(list.items.iter().rev().take(15).map(|e| {
                let object = &e.involved_object;
                format!(
                    "  event {} {}/{}: {} {}",
                    e.type_.as_deref().unwrap_or("?"),
                    object.kind.as_deref().unwrap_or("?"),
                    object.name.as_deref().unwrap_or("?"),
                    e.reason.as_deref().unwrap_or("?"),
                    e.message.as_deref().unwrap_or(""),
                )
            })),
            Err(error) => lines.push(format!("  events not listed: {error}")),
        }
        lines.join("\n")
    }

    /// Deletes the namespace (and everything in it).
    pub async fn delete(self) -> anyhow::Result<()> {
        Api::<Namespace>::all(self.client.clone())
            .delete(&self.name, &DeleteParams::default())
            .await?;
        Ok(())
    }
}

/// Server-side applies every document of `yaml`: namespaced kinds into `namespace` (or,
/// without one, their own `metadata.namespace`), cluster-scoped ones as they are.
pub async fn apply(client: &Client, namespace: Option<&str>, yaml: &str) -> anyhow::Result<()> {
    let applier = crate::apply::Applier::new(client.clone(), "fleetmesh-tests").await?;
    for object in crate::apply::documents(yaml)? {
        applier
            .apply(&object, namespace)
            .await
            .with_context(|| crate::apply::describe(&object))?;
    }
    Ok(())
}

/// `  pod NAME PHASE on NODE [CONDITION=STATUS REASON ...]`.
fn pod_summary(pod: &Pod) -> String {
    let status = pod.status.as_ref();
    let conditions = status
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .map(|c| {
            format!(
                "{}={} {}",
                c.type_,
                c.status,
                c.reason.as_deref().unwrap_or("")
            )
        });
    format!(
        "  pod {} {} on {} [{}]",
        pod.metadata.name.as_deref().unwrap_or("?"),
        status
            .and_then(|s| s.phase.as_deref())
            .unwrap_or("no phase"),
        pod.spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .unwrap_or("no node"),
        conditions.collect::<Vec<_>>().join(", "),
    )
}

/// The IPs of the Running (not terminating) pods that `selector` picks.
pub async fn running_pod_ips(
    pods: &Api<Pod>,
    selector: &str,
) -> std::collections::BTreeSet<String> {
    let list = pods
        .list(&ListParams::default().labels(selector))
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    list.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .filter_map(|p| p.status.as_ref()?.pod_ip.clone())
        .collect()
}

/// Polls `check` until it returns `Some`, or fails after `timeout` naming `what`.
pub async fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from("."))
}
