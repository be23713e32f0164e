//! The fleet: which clusters are members of which project (`fleetmesh install
//! --enable-registration`), and whether the project's mesh is enabled (`fleetmesh mesh
//! enable`). Kept in one JSON file in the state directory, replaced atomically on every
//! change, so a crash or restart loses nothing. Each member's credential (what meshd
//! reaches its API server with) is kept beside it, 0600 ([`credential`]); the members of
//! enabled meshes are served ([`members`]).

pub mod credential;
pub mod members;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

const FILE: &str = "fleet.json";

/// A project: its clusters, whether their mesh is enabled, and its trust domain.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Project {
    /// `fleetmesh mesh enable` was run for it.
    #[serde(default)]
    pub mesh_enabled: bool,
    /// The trust domain `mesh enable --trust-domain` set; unset: [`default_trust_domain`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_domain: Option<String>,
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

/// One member cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

/// The registry of projects and their clusters, kept in `fleet.json`.
pub struct Fleet {
    path: PathBuf,
    /// Where members' credentials are kept.
    credentials: PathBuf,
    projects: Mutex<BTreeMap<String, Project>>,
}

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
        Ok(Fleet {
            path,
            credentials: state_dir.join("credentials"),
            projects: Mutex::new(projects),
        })
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
    pub fn register(
        &self,
        project: &str,
        cluster: &str,
        location: &str,
        channel: &str,
        credential: Option<&credential::Kubeconfig>,
    ) -> Result<Change, FleetError> {
        check_names(project, cluster)?;
        let credential_dir = self.credential_dir(project, cluster);
        // Checked and changed under one lock: two registrations of one cluster cannot
        // both win.
        self.change(|projects| {
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
            if let Some(kubeconfig) = credential {
                kubeconfig.store(&credential_dir)?;
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
    }

    /// Removes `cluster` from `project`, with its credential.
    pub fn remove(&self, project: &str, cluster: &str) -> Result<(), FleetError> {
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
        })?;
        let dir = self.credential_dir(project, cluster);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(anyhow::anyhow!("{}: {e}", dir.display()).into())
            }
            _ => Ok(()),
        }
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

    /// Marks the mesh of `project` enabled, with `trust_domain` if given (allowed while
    /// the project has no member of another trust domain).
    pub fn enable_mesh(
        &self,
        project: &str,
        trust_domain: Option<&str>,
    ) -> Result<Change, FleetError> {
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
        self.change(|projects| {
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
            if !project.mesh_enabled {
                project.mesh_enabled = true;
                change = Change::Updated;
            }
            Ok(change)
        })
    }

    /// Applies `apply` to a copy of the projects and, if it changed anything, writes the
    /// copy and keeps it; all under one lock.
    fn change(
        &self,
        apply: impl FnOnce(&mut BTreeMap<String, Project>) -> Result<Change, FleetError>,
    ) -> Result<Change, FleetError> {
        let mut projects = self.projects.lock();
        let mut changed = projects.clone();
        let change = apply(&mut changed)?;
        if change != Change::Unchanged {
            let text = serde_json::to_vec_pretty(&changed).map_err(anyhow::Error::from)?;
            fleetmesh_ca::files::write_public(&self.path, &text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", self.path.display()))?;
            *projects = changed;
        }
        Ok(change)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_persist_and_repeat_as_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let fleet = Fleet::load(dir.path()).unwrap();
        assert_eq!(
            fleet
                .register("p", "c1", "us-central1", "regular", None)
                .unwrap(),
            Change::Created
        );
        assert_eq!(
            fleet
                .register("p", "c1", "us-central1", "regular", None)
                .unwrap(),
            Change::Unchanged
        );
        assert_eq!(
            fleet
                .register("p", "c1", "europe-west1", "regular", None)
                .unwrap(),
            Change::Updated
        );
        // One project per cluster; names that could walk the state directory are refused.
        let taken = fleet.register("q", "c1", "us-central1", "regular", None);
        assert!(
            matches!(taken, Err(FleetError::Conflict { .. })),
            "{taken:?}"
        );
        for (project, cluster) in [("../p", "c"), ("p", "../c"), ("p", "a/b"), ("P", "c")] {
            let bad = fleet.register(project, cluster, "l", "regular", None);
            assert!(
                matches!(bad, Err(FleetError::InvalidName { .. })),
                "{project} {cluster}"
            );
        }
        assert_eq!(fleet.enable_mesh("p", None).unwrap(), Change::Updated);
        assert_eq!(fleet.enable_mesh("p", None).unwrap(), Change::Unchanged);
        let reloaded = Fleet::load(dir.path()).unwrap().projects();
        let project = &reloaded["p"];
        assert!(project.mesh_enabled);
        assert_eq!(project.memberships["c1"].location, "europe-west1");
    }

    #[test]
    fn a_trust_domain_is_set_before_members_join_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let fleet = Fleet::load(dir.path()).unwrap();
        assert_eq!(fleet.trust_domain("p"), "p.svc.id.goog");
        let bad = fleet.enable_mesh("p", Some("Not A Domain"));
        assert!(
            matches!(bad, Err(FleetError::InvalidTrustDomain(_))),
            "{bad:?}"
        );
        assert_eq!(
            fleet.enable_mesh("p", Some("shop.example")).unwrap(),
            Change::Updated
        );
        fleet.register("p", "c1", "l", "regular", None).unwrap();
        assert_eq!(
            fleet.enable_mesh("p", Some("shop.example")).unwrap(),
            Change::Unchanged
        );
        assert_eq!(fleet.enable_mesh("p", None).unwrap(), Change::Unchanged);
        let changed = fleet.enable_mesh("p", Some("other.example"));
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
