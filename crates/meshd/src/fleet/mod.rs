//! The fleet: which clusters are members of which project (`fleetmesh install
//! --enable-registration`), and whether the project's mesh is enabled (`fleetmesh mesh
//! enable`). Kept in one JSON file in the state directory, replaced atomically on every
//! change, so a crash or restart loses nothing; or, for several meshd replicas, in a
//! host Kubernetes cluster ([`host`]). Each member's credential (what meshd reaches its
//! API server with) is kept beside it, 0600 ([`credential`]); the members of enabled
//! meshes are served ([`members`]).

pub mod credential;
mod host;
pub mod members;

use futures::StreamExt;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const FILE: &str = "fleet.json";

/// A project: its clusters, whether their mesh is enabled, and its trust domain.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Project {
    /// `fleetmesh mesh enable` was run for it.
    #[serde(default)]
    pub mesh_enabled: bool,
    /// The trust domain `mesh enable --trust-domain` set; unset: [`default_trust_domain`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_domain: Option<String>,
    /// Whether its sidecars fetch their outbound routes on demand (`mesh enable
    /// --on-demand-routes`); unset: as meshd's `--on-demand-routes` says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_demand_routes: Option<bool>,
    /// Its member clusters, by name.
    #[serde(default)]
    pub memberships: BTreeMap<String, Membership>,
}

/// The trust domain of a project's workload identities unless set otherwise, as the
/// seed's mesh CA names it: `PROJECT.svc.id.goog`.
pub fn default_trust_domain(project: &str) -> String {
    format!("{project}.svc.id.goog")
}

impl Project {
    /// The trust domain of the project named `name`.
    pub fn trust_domain_of(&self, name: &str) -> String {
        self.trust_domain
            .clone()
            .unwrap_or_else(|| default_trust_domain(name))
    }
}

/// What `mesh enable` sets besides enabling the mesh; what is unset stays as it was.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MeshSettings {
    /// The project's trust domain (fixed once it has members).
    #[serde(default)]
    pub trust_domain: Option<String>,
    /// Whether its sidecars fetch their outbound routes on demand.
    #[serde(default)]
    pub on_demand_routes: Option<bool>,
}

/// One member cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Membership {
    /// Where the cluster runs (`-l LOCATION`); proxies there get it as their locality.
    pub location: String,
    /// The release channel it was installed with.
    pub channel: String,
    /// Seconds since the epoch of the first registration.
    #[serde(default)]
    pub registered_at: u64,
}

/// What registering changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    /// A new membership.
    Created,
    /// A membership whose location or channel changed.
    Updated,
    /// Registered as it already was.
    Unchanged,
}

/// Why a fleet change is refused.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// A project or cluster name that cannot name a file or a Kubernetes object.
    #[error("{what} {name:?} is not a valid name (lowercase letters, digits and '-'{dots})", dots = if *what == "cluster" { ", '.' between parts" } else { "" })]
    InvalidName {
        /// `project` or `cluster`.
        what: &'static str,
        /// The name given.
        name: String,
    },
    /// A cluster belongs to one project only (its proxies are routed by its name).
    #[error("cluster {cluster:?} is a member of project {project:?} already")]
    Conflict {
        /// The cluster.
        cluster: String,
        /// The project it is a member of.
        project: String,
    },
    /// Not a trust domain (a DNS name: lowercase letters, digits, '-' and '.').
    #[error("trust domain {0:?} is not a valid DNS name (lowercase letters, digits, '-' and '.')")]
    InvalidTrustDomain(String),
    /// A project's trust domain names its workloads' certificates: it cannot change under
    /// clusters installed with it.
    #[error(
        "project {project:?} has member clusters with trust domain {current:?}; it cannot change to {asked:?} (remove the members first)"
    )]
    TrustDomainFixed {
        /// The project.
        project: String,
        /// Its trust domain.
        current: String,
        /// The one asked for.
        asked: String,
    },
    /// No such membership.
    #[error("cluster {cluster:?} is not a member of project {project:?}")]
    NotFound {
        /// The project.
        project: String,
        /// The cluster.
        cluster: String,
    },
    /// The state could not be written.
    #[error(transparent)]
    Storage(#[from] anyhow::Error),
}

/// Where the registry is kept.
enum Storage {
    /// `fleet.json` in the state directory, replaced atomically on every change.
    File(PathBuf),
    /// A host cluster, shared by meshd's replicas.
    Host(Box<host::HostRegistry>),
}

/// The registry of projects and their clusters.
pub struct Fleet {
    storage: Storage,
    /// Where members' credentials are kept (in a host cluster's registry: this replica's
    /// copies).
    credentials: PathBuf,
    projects: Mutex<BTreeMap<String, Project>>,
    /// Counts changes, made here or (in a host cluster) by another replica.
    changed: watch::Sender<u64>,
}

/// A host registry write is retried this often when other replicas keep changing it.
const HOST_ATTEMPTS: usize = 8;

fn check_names(project: &str, cluster: &str) -> Result<(), FleetError> {
    use fleetmesh_api::validate::{is_dns1123_label, is_dns1123_subdomain};
    if !is_dns1123_label(project) {
        return Err(FleetError::InvalidName {
            what: "project",
            name: project.into(),
        });
    }
    if !is_dns1123_subdomain(cluster) {
        return Err(FleetError::InvalidName {
            what: "cluster",
            name: cluster.into(),
        });
    }
    Ok(())
}

impl Fleet {
    /// The fleet kept in `state_dir` (empty on first start).
    pub fn load(state_dir: &Path) -> anyhow::Result<Fleet> {
        std::fs::create_dir_all(state_dir)?;
        let path = state_dir.join(FILE);
        let projects = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(anyhow::anyhow!("{}: {e}", path.display())),
        };
        Ok(Fleet::new(Storage::File(path), state_dir, projects))
    }

    /// The fleet kept in `namespace` of the host cluster `client` reaches, shared with
    /// the other replicas using it; followed until `stop` (this replica's copies of the
    /// credentials in `state_dir`).
    pub async fn in_host_cluster(
        state_dir: &Path,
        client: kube::Client,
        namespace: &str,
        stop: CancellationToken,
    ) -> anyhow::Result<Arc<Fleet>> {
        std::fs::create_dir_all(state_dir)?;
        let registry = host::HostRegistry::open(client, namespace).await?;
        let changes = registry.changes();
        let fleet = Arc::new(Fleet::new(
            Storage::Host(Box::new(registry)),
            state_dir,
            BTreeMap::new(),
        ));
        fleet.sync_from_host().await?;
        let following = fleet.clone();
        tokio::spawn(async move {
            let mut changes = std::pin::pin!(changes);
            loop {
                tokio::select! {
                    change = changes.next() => if change.is_none() { break },
                    () = stop.cancelled() => break,
                }
                if let Err(error) = following.sync_from_host().await {
                    let error = format!("{error:#}");
                    tracing::warn!(%error, "cannot read the fleet registry (retrying)");
                }
            }
        });
        Ok(fleet)
    }

    fn new(storage: Storage, state_dir: &Path, projects: BTreeMap<String, Project>) -> Fleet {
        Fleet {
            storage,
            credentials: state_dir.join("credentials"),
            projects: Mutex::new(projects),
            changed: watch::channel(0).0,
        }
    }

    /// Takes the host cluster's registry and credentials as they are now.
    async fn sync_from_host(&self) -> anyhow::Result<()> {
        let Storage::Host(registry) = &self.storage else {
            return Ok(());
        };
        let (projects, _) = registry.read().await?;
        let stored = registry.credentials().await?;
        let mut kept = BTreeSet::new();
        for credential in stored {
            // Names that could not be registered are never used as paths.
            if check_names(&credential.project, &credential.cluster).is_err() {
                continue;
            }
            let dir = self.credential_dir(&credential.project, &credential.cluster);
            // Rewrites only what differs.
            credential.files.write(&dir)?;
            kept.insert(dir);
        }
        for dir in self.stored_credential_dirs() {
            if !kept.contains(&dir) {
                std::fs::remove_dir_all(&dir)?;
            }
        }
        *self.projects.lock() = projects;
        self.notify();
        Ok(())
    }

    /// The credential directories in the state directory.
    fn stored_credential_dirs(&self) -> Vec<PathBuf> {
        let children = |dir: &Path| -> Vec<PathBuf> {
            std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|entry| entry.path())
                .filter(|path| path.is_dir())
                .collect()
        };
        children(&self.credentials)
            .iter()
            .flat_map(|project| children(project))
            .collect()
    }

    /// Follows the fleet's changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn notify(&self) {
        self.changed.send_modify(|count| *count += 1);
    }

    /// The project `name`, as it is now.
    pub fn project(&self, name: &str) -> Option<Project> {
        self.projects.lock().get(name).cloned()
    }

    /// Every project, as it is now.
    pub fn projects(&self) -> BTreeMap<String, Project> {
        self.projects.lock().clone()
    }

    /// Each member cluster's project.
    pub fn cluster_projects(&self) -> BTreeMap<String, String> {
        let projects = self.projects.lock();
        projects
            .iter()
            .flat_map(|(project, p)| {
                p.memberships
                    .keys()
                    .map(move |c| (c.clone(), project.clone()))
            })
            .collect()
    }

    /// Records `cluster` as a member of `project` (idempotent: the same registration
    /// twice is `Unchanged`), with the credential meshd serves it with, if given. A new
    /// credential replaces the old one (a re-run of install refreshes it) without
    /// counting as a change of the membership.
    pub async fn register(
        &self,
        project: &str,
        cluster: &str,
        location: &str,
        channel: &str,
        credential: Option<&credential::Kubeconfig>,
    ) -> Result<Change, FleetError> {
        check_names(project, cluster)?;
        // Checked and changed at once: two registrations of one cluster cannot both win.
        let change = self
            .change(|projects| {
                let owner = projects
                    .iter()
                    .find(|(_, p)| p.memberships.contains_key(cluster))
                    .map(|(owner, _)| owner);
                if let Some(owner) = owner.filter(|owner| *owner != project) {
                    return Err(FleetError::Conflict {
                        cluster: cluster.into(),
                        project: owner.clone(),
                    });
                }
                let project = projects.entry(project.into()).or_default();
                Ok(match project.memberships.get_mut(cluster) {
                    Some(member) if member.location == location && member.channel == channel => {
                        Change::Unchanged
                    }
                    Some(member) => {
                        member.location = location.into();
                        member.channel = channel.into();
                        Change::Updated
                    }
                    None => {
                        let now = SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .map_or(0, |d| d.as_secs());
                        project.memberships.insert(
                            cluster.into(),
                            Membership {
                                location: location.into(),
                                channel: channel.into(),
                                registered_at: now,
                            },
                        );
                        Change::Created
                    }
                })
            })
            .await?;
        if let Some(kubeconfig) = credential {
            kubeconfig.store(&self.credential_dir(project, cluster))?;
            self.credential_changed(project, cluster).await?;
        }
        self.notify();
        Ok(change)
    }

    /// Shares the credential of `cluster` of `project` as it is now in its directory
    /// (renewed, or given by install) with the other replicas, if there are any.
    pub async fn credential_changed(&self, project: &str, cluster: &str) -> anyhow::Result<()> {
        if let Storage::Host(registry) = &self.storage {
            let files = credential::Files::read(&self.credential_dir(project, cluster))?;
            registry.store_credential(project, cluster, &files).await?;
        }
        Ok(())
    }

    /// Removes `cluster` from `project`, with its credential.
    pub async fn remove(&self, project: &str, cluster: &str) -> Result<(), FleetError> {
        check_names(project, cluster)?;
        self.change(|projects| {
            let member = projects
                .get_mut(project)
                .and_then(|p| p.memberships.remove(cluster));
            match member {
                Some(_) => Ok(Change::Updated),
                None => Err(FleetError::NotFound {
                    project: project.into(),
                    cluster: cluster.into(),
                }),
            }
        })
        .await?;
        if let Storage::Host(registry) = &self.storage {
            registry
                .remove_credential(project, cluster)
                .await
                .map_err(anyhow::Error::from)?;
        }
        let dir = self.credential_dir(project, cluster);
        let removed = match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(anyhow::anyhow!("{}: {e}", dir.display()).into())
            }
            _ => Ok(()),
        };
        self.notify();
        removed
    }

    /// Where the credential of `cluster` of `project` is kept.
    pub fn credential_dir(&self, project: &str, cluster: &str) -> PathBuf {
        self.credentials.join(project).join(cluster)
    }

    /// The trust domain of `project` (its default if it is not known yet).
    pub fn trust_domain(&self, project: &str) -> String {
        match self.projects.lock().get(project) {
            Some(p) => p.trust_domain_of(project),
            None => default_trust_domain(project),
        }
    }

    /// Marks the mesh of `project` enabled, with what `settings` sets (a trust domain only
    /// while the project has no member of another trust domain).
    pub async fn enable_mesh(
        &self,
        project: &str,
        settings: &MeshSettings,
    ) -> Result<Change, FleetError> {
        let trust_domain = settings.trust_domain.as_deref();
        use fleetmesh_api::validate::{is_dns1123_label, is_dns1123_subdomain};
        if !is_dns1123_label(project) {
            return Err(FleetError::InvalidName {
                what: "project",
                name: project.into(),
            });
        }
        if let Some(asked) = trust_domain.filter(|t| !is_dns1123_subdomain(t)) {
            return Err(FleetError::InvalidTrustDomain(asked.into()));
        }
        let change = self
            .change(|projects| {
                let name = project;
                let project = projects.entry(name.into()).or_default();
                let mut change = Change::Unchanged;
                if let Some(asked) = trust_domain {
                    let current = project.trust_domain_of(name);
                    if asked != current {
                        if !project.memberships.is_empty() {
                            return Err(FleetError::TrustDomainFixed {
                                project: name.into(),
                                current,
                                asked: asked.into(),
                            });
                        }
                        project.trust_domain = Some(asked.into());
                        change = Change::Updated;
                    }
                }
                if let Some(asked) = settings.on_demand_routes
                    && project.on_demand_routes != Some(asked)
                {
                    project.on_demand_routes = Some(asked);
                    change = Change::Updated;
                }
                if !project.mesh_enabled {
                    project.mesh_enabled = true;
                    change = Change::Updated;
                }
                Ok(change)
            })
            .await?;
        self.notify();
        Ok(change)
    }

    /// Applies `apply` to a copy of the projects and, if it changed anything, stores the
    /// copy and keeps it. In a file: under one lock. In a host cluster: `apply` sees the
    /// registry as it is there, and runs again if another replica changed it meanwhile.
    async fn change(
        &self,
        mut apply: impl FnMut(&mut BTreeMap<String, Project>) -> Result<Change, FleetError>,
    ) -> Result<Change, FleetError> {
        let registry = match &self.storage {
            Storage::File(path) => {
                let mut projects = self.projects.lock();
                let mut changed = projects.clone();
                let change = apply(&mut changed)?;
                if change != Change::Unchanged {
                    let text = serde_json::to_vec_pretty(&changed).map_err(anyhow::Error::from)?;
                    fleetmesh_ca::files::write_public(path, &text)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                    *projects = changed;
                }
                return Ok(change);
            }
            Storage::Host(registry) => registry,
        };
        for _ in 0..HOST_ATTEMPTS {
            let (mut projects, version) = registry.read().await.map_err(anyhow::Error::from)?;
            let change = apply(&mut projects)?;
            if change == Change::Unchanged {
                return Ok(change);
            }
            match registry.write(projects.clone(), version).await {
                Ok(()) => {
                    *self.projects.lock() = projects;
                    return Ok(change);
                }
                Err(host::WriteError::Conflict) => continue,
                Err(host::WriteError::Failed(e)) => return Err(anyhow::Error::from(e).into()),
            }
        }
        Err(anyhow::anyhow!("the fleet registry kept changing; try again").into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn registrations_persist_and_repeat_as_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let fleet = Fleet::load(dir.path()).unwrap();
        assert_eq!(
            fleet
                .register("p", "c1", "us-central1", "regular", None)
                .await
                .unwrap(),
            Change::Created
        );
        assert_eq!(
            fleet
                .register("p", "c1", "us-central1", "regular", None)
                .await
                .unwrap(),
            Change::Unchanged
        );
        assert_eq!(
            fleet
                .register("p", "c1", "europe-west1", "regular", None)
                .await
                .unwrap(),
            Change::Updated
        );
        // One project per cluster; names that could walk the state directory are refused.
        let taken = fleet
            .register("q", "c1", "us-central1", "regular", None)
            .await;
        assert!(
            matches!(taken, Err(FleetError::Conflict { .. })),
            "{taken:?}"
        );
        for (project, cluster) in [("../p", "c"), ("p", "../c"), ("p", "a/b"), ("P", "c")] {
            let bad = fleet.register(project, cluster, "l", "regular", None).await;
            assert!(
                matches!(bad, Err(FleetError::InvalidName { .. })),
                "{project} {cluster}"
            );
        }
        assert_eq!(
            fleet
                .enable_mesh("p", &MeshSettings::default())
                .await
                .unwrap(),
            Change::Updated
        );
        assert_eq!(
            fleet
                .enable_mesh("p", &MeshSettings::default())
                .await
                .unwrap(),
            Change::Unchanged
        );
        let reloaded = Fleet::load(dir.path()).unwrap().projects();
        let project = &reloaded["p"];
        assert!(project.mesh_enabled);
        assert_eq!(project.memberships["c1"].location, "europe-west1");
    }

    fn trust_domain(name: &str) -> MeshSettings {
        MeshSettings {
            trust_domain: Some(name.into()),
            ..MeshSettings::default()
        }
    }

    #[tokio::test]
    async fn routes_on_demand_are_set_per_project_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let fleet = Fleet::load(dir.path()).unwrap();
        let on_demand = |asked| MeshSettings {
            on_demand_routes: asked,
            ..MeshSettings::default()
        };
        assert_eq!(
            fleet
                .enable_mesh("p", &on_demand(Some(true)))
                .await
                .unwrap(),
            Change::Updated
        );
        assert_eq!(fleet.projects()["p"].on_demand_routes, Some(true));
        // Unset: left as it is.
        assert_eq!(
            fleet.enable_mesh("p", &on_demand(None)).await.unwrap(),
            Change::Unchanged
        );
        assert_eq!(
            fleet
                .enable_mesh("p", &on_demand(Some(false)))
                .await
                .unwrap(),
            Change::Updated
        );
        let reloaded = Fleet::load(dir.path()).unwrap().projects();
        assert_eq!(reloaded["p"].on_demand_routes, Some(false));
    }

    #[tokio::test]
    async fn a_trust_domain_is_set_before_members_join_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let fleet = Fleet::load(dir.path()).unwrap();
        assert_eq!(fleet.trust_domain("p"), "p.svc.id.goog");
        let bad = fleet.enable_mesh("p", &trust_domain("Not A Domain")).await;
        assert!(
            matches!(bad, Err(FleetError::InvalidTrustDomain(_))),
            "{bad:?}"
        );
        assert_eq!(
            fleet
                .enable_mesh("p", &trust_domain("shop.example"))
                .await
                .unwrap(),
            Change::Updated
        );
        fleet
            .register("p", "c1", "l", "regular", None)
            .await
            .unwrap();
        assert_eq!(
            fleet
                .enable_mesh("p", &trust_domain("shop.example"))
                .await
                .unwrap(),
            Change::Unchanged
        );
        assert_eq!(
            fleet
                .enable_mesh("p", &MeshSettings::default())
                .await
                .unwrap(),
            Change::Unchanged
        );
        let changed = fleet.enable_mesh("p", &trust_domain("other.example")).await;
        assert!(
            matches!(changed, Err(FleetError::TrustDomainFixed { .. })),
            "{changed:?}"
        );
        let reloaded = Fleet::load(dir.path()).unwrap();
        assert_eq!(reloaded.trust_domain("p"), "shop.example");
    }

    #[test]
    fn a_corrupt_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), "{").unwrap();
        let error = Fleet::load(dir.path()).err().unwrap().to_string();
        assert!(error.contains("fleet.json"), "{error}");
    }
}
