//! The CAs meshd signs with, each a directory in Istio's `cacerts` layout: meshd's own
//! in `--ca-dir` (its own mesh, and its serving certificate, which every cluster's pods
//! trust to reach meshd), and one per fleet project in `--ca-dir/projects/PROJECT`,
//! created with the project's trust domain on first use (or holding the project's
//! plug-in certs, put there to keep an existing mesh's root). A project's root is its
//! own: a certificate one project's CA signs is worth nothing in another's mesh.
//!
//! The directory is watched: a changed file (a root rotation step, new plug-in certs)
//! replaces the CA it belongs to. A directory that does not load (a half-written step, a
//! key that is not the certificate's) is logged and its current CA stays.

use fleetmesh_ca::CertificateAuthority;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Files change in bursts; the directory is read once they settle.
const SETTLE: Duration = Duration::from_millis(200);

/// Where projects' CAs live, under `--ca-dir`.
const PROJECTS: &str = "projects";

/// One loaded CA: where it comes from and its current state.
struct Loaded {
    dir: PathBuf,
    trust_domain: String,
    current: watch::Sender<Arc<CertificateAuthority>>,
}

impl Loaded {
    fn open(dir: PathBuf, trust_domain: &str, max_ttl: Duration) -> anyhow::Result<Loaded> {
        let authority = CertificateAuthority::load_or_create(&dir, trust_domain, max_ttl)?;
        Ok(Loaded {
            dir,
            trust_domain: trust_domain.to_string(),
            current: watch::channel(Arc::new(authority)).0,
        })
    }

    /// Reads the directory again; a CA that loads replaces the current one.
    fn reload(&self, max_ttl: Duration) {
        match CertificateAuthority::load_or_create(&self.dir, &self.trust_domain, max_ttl) {
            Ok(loaded) => {
                if loaded.roots() != self.current.borrow().roots() {
                    let roots = pem_count(loaded.roots());
                    tracing::info!(dir = %self.dir.display(), roots, "trust bundle changed");
                }
                self.current.send_replace(Arc::new(loaded));
            }
            Err(error) => {
                tracing::warn!(dir = %self.dir.display(), %error, "CA files changed but do not load; still signing with the previous CA");
            }
        }
    }
}

/// meshd's CA and its projects' CAs.
pub struct Authorities {
    own: Loaded,
    projects_dir: PathBuf,
    max_ttl: Duration,
    /// The projects' CAs loaded so far (kept while meshd runs: a CA is a few KiB).
    projects: Mutex<BTreeMap<String, Loaded>>,
}

impl Authorities {
    /// meshd's own CA in `ca_dir` (created on first start), of `trust_domain`.
    pub fn load(
        ca_dir: &Path,
        trust_domain: &str,
        max_ttl: Duration,
    ) -> anyhow::Result<Authorities> {
        Ok(Authorities {
            own: Loaded::open(ca_dir.to_path_buf(), trust_domain, max_ttl)?,
            projects_dir: ca_dir.join(PROJECTS),
            max_ttl,
            projects: Mutex::default(),
        })
    }

    /// meshd's own CA, as it is now and after every change.
    pub fn own(&self) -> watch::Receiver<Arc<CertificateAuthority>> {
        self.own.current.subscribe()
    }

    /// The CA of `project`, signing for `trust_domain` (its root created on first use).
    pub fn project(
        &self,
        project: &str,
        trust_domain: &str,
    ) -> anyhow::Result<watch::Receiver<Arc<CertificateAuthority>>> {
        let mut projects = self.projects.lock();
        if let Some(loaded) = projects.get(project)
            && loaded.trust_domain == trust_domain
        {
            return Ok(loaded.current.subscribe());
        }
        // Project names are DNS labels (checked when registered): never a path.
        let dir = self.projects_dir.join(project);
        let loaded = create_once(&dir, trust_domain, self.max_ttl)
            .and_then(|()| Loaded::open(dir, trust_domain, self.max_ttl))
            .map_err(|e| anyhow::anyhow!("the CA of project {project}: {e:#}"))?;
        let current = loaded.current.subscribe();
        projects.insert(project.to_string(), loaded);
        Ok(current)
    }

    fn reload(&self) {
        self.own.reload(self.max_ttl);
        for loaded in self.projects.lock().values() {
            loaded.reload(self.max_ttl);
        }
    }
}

/// Creates the CA directory `dir` unless it exists, whole or not at all: its root is
/// made in a directory of its own, then renamed into place. Replicas sharing `--ca-dir`
/// may create a project's CA at the same time; one rename wins, and every replica then
/// loads that one's root.
fn create_once(dir: &Path, trust_domain: &str, max_ttl: Duration) -> anyhow::Result<()> {
    if dir.join(fleetmesh_ca::authority::CA_KEY).exists() {
        return Ok(());
    }
    let parent = dir.parent().unwrap_or(dir);
    std::fs::create_dir_all(parent)?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    // Not a project name (those never start with a dot).
    let staging = parent.join(format!(".creating-{}-{nanos}", std::process::id()));
    CertificateAuthority::load_or_create(&staging, trust_domain, max_ttl)?;
    if std::fs::rename(&staging, dir).is_err() {
        // Another replica's root won (or an empty directory was in the way: loading
        // creates the root there).
        std::fs::remove_dir_all(&staging)?;
    }
    Ok(())
}

/// Watches `--ca-dir` (projects' directories included) until the returned watcher is
/// dropped.
pub fn watch(authorities: Arc<Authorities>) -> anyhow::Result<notify::RecommendedWatcher> {
    let (changes_tx, mut changes) = tokio::sync::mpsc::unbounded_channel();
    let watcher = crate::local::watch(&authorities.own.dir, changes_tx)?;
    tokio::spawn(async move {
        while changes.recv().await.is_some() {
            tokio::time::sleep(SETTLE).await;
            while changes.try_recv().is_ok() {}
            authorities.reload();
        }
    });
    Ok(watcher)
}

fn pem_count(text: &str) -> usize {
    text.matches("-----BEGIN CERTIFICATE-----").count()
}
