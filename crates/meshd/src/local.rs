//! Local mode's config source: every YAML file under a directory, watched.
//!
//! Each file is all-or-nothing. A file that fails to parse or validate is reported once
//! and ignored; the last good version of it keeps serving, so a typo never takes config
//! away from a proxy.

use crate::MeshdConfig;
use fleetmesh_api::{LoadedResource, load_documents};
use fleetmesh_model::trigger::{Origin, Trigger};
use fleetmesh_model::{Snapshot, SnapshotInput};
use notify::{RecursiveMode, Watcher};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tokio::sync::mpsc::UnboundedSender;

#[derive(Default)]
struct FileState {
    /// The text last read, to skip unchanged files.
    text: String,
    /// The last good resources of the file.
    resources: Vec<LoadedResource>,
    /// Why the current text is rejected, if it is.
    errors: Vec<String>,
}

/// Local mode's config: the YAML files of one directory.
pub struct LocalSource {
    dir: PathBuf,
    files: Mutex<BTreeMap<PathBuf, FileState>>,
}

impl LocalSource {
    /// The source of `config.config_dir` (read on the first snapshot).
    pub fn new(config: &MeshdConfig) -> LocalSource {
        LocalSource {
            dir: config.config_dir.clone(),
            files: Mutex::default(),
        }
    }

    /// Re-reads the files that changed and builds the snapshot of every file's last good
    /// config and `input` (the other sources).
    pub fn snapshot(&self, input: SnapshotInput<'_>) -> Snapshot {
        let mut files = self.files.lock();
        let present = yaml_files(&self.dir);
        files.retain(|path, _| present.contains(path));
        for path in present {
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let state = files.entry(path.clone()).or_default();
            if state.text == text && !text.is_empty() {
                continue;
            }
            match load_documents(Some(&path), &text) {
                Ok(resources) => {
                    if !state.errors.is_empty() {
                        tracing::info!(file = %path.display(), "config file is valid again");
                    }
                    state.resources = resources;
                    state.errors.clear();
                }
                Err(errors) => {
                    state.errors = errors.iter().map(|e| e.to_string()).collect();
                    for error in &state.errors {
                        tracing::error!(%error, "rejected config file; its last good version keeps serving");
                    }
                }
            }
            state.text = text;
        }
        let mut resources: Vec<&fleetmesh_api::Resource> = files
            .values()
            .flat_map(|f| f.resources.iter().map(|r| &r.resource))
            .collect();
        resources.extend(input.resources.iter().copied());
        Snapshot::build(SnapshotInput { resources, ..input })
    }

    /// Why the files that are rejected now are rejected (file, field, reason).
    pub fn errors(&self) -> Vec<String> {
        let files = self.files.lock();
        files.values().flat_map(|f| f.errors.clone()).collect()
    }
}

/// The YAML files under `dir` (see [`files_with_extensions`]).
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    files_with_extensions(dir, &["yaml", "yml"])
}

/// The files under `dir` whose names end in one of `extensions`, sorted, hidden ones left
/// out. Symbolic links to files are read (a mounted ConfigMap's files are links); links
/// to directories are not followed, so a link back up the tree cannot make the walk
/// endless.
pub fn files_with_extensions(dir: &Path, extensions: &[&str]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let hidden = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
            if hidden {
                continue;
            }
            // The entry's own type: a link to a directory is not a directory.
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                pending.push(path);
            } else if path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| extensions.contains(&e))
            {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// Signals `changes` whenever something under `dir` changes. Keep the watcher alive for
/// as long as changes should be seen.
pub fn watch(
    dir: &Path,
    changes: UnboundedSender<Trigger>,
) -> anyhow::Result<notify::RecommendedWatcher> {
    if !dir.is_dir() {
        anyhow::bail!(
            "config directory {} does not exist (create it, or pass --config-dir)",
            dir.display()
        );
    }
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            let _ = changes.send(Trigger::update(Origin::Files));
        }
    })?;
    watcher.watch(dir, RecursiveMode::Recursive)?;
    Ok(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_walk_reads_linked_files_and_never_follows_a_linked_directory() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("apps/..data")).unwrap();
        std::fs::write(root.join("apps/..data/route.yaml"), "").unwrap();
        // A mounted ConfigMap: the file is a link into its hidden data directory.
        std::os::unix::fs::symlink("..data/route.yaml", root.join("apps/route.yaml")).unwrap();
        // A loop back to the top: followed, the walk would never end.
        std::os::unix::fs::symlink(root, root.join("apps/loop")).unwrap();
        std::fs::write(root.join("mesh.yml"), "").unwrap();
        let found = yaml_files(root);
        assert_eq!(found, [root.join("apps/route.yaml"), root.join("mesh.yml")]);
    }
}
