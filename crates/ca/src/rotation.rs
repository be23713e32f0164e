//! Replacing the mesh root without a failed request, in three steps with time between
//! them (each step is a file change meshd picks up live):
//!
//! 1. [`add_root`]: a new root is made and added to the trust bundle; signing stays with
//!    the old one. Wait until every workload has renewed (half a certificate lifetime),
//!    so all trust both roots.
//! 2. [`activate_root`]: new certificates are signed by the new root. Wait a full
//!    certificate lifetime, so no certificate of the old root is left.
//! 3. [`retire_roots`]: the bundle keeps only the new root.

use crate::authority::{CA_CERT, CA_KEY, CERT_CHAIN, ROOT_CERT, generate_root};
use crate::files;
use std::path::{Path, PathBuf};

/// Where step 1 keeps the new root until step 2.
pub const NEXT_ROOT_DIR: &str = "next-root";

/// Why a rotation step failed.
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The new root could not be made.
    #[error("creating the new root: {0}")]
    Generate(#[from] rcgen::Error),
    /// The step does not follow the one before (e.g. `activate` before `add`).
    #[error("{0}")]
    OutOfOrder(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RotationError + '_ {
    move |source| RotationError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn read(path: &Path) -> Result<String, RotationError> {
    std::fs::read_to_string(path).map_err(io(path))
}

/// Step 1: a new root, trusted beside the current one.
pub fn add_root(dir: &Path, trust_domain: &str) -> Result<(), RotationError> {
    let next = dir.join(NEXT_ROOT_DIR);
    if next.exists() {
        return Err(RotationError::OutOfOrder(format!(
            "a new root is already waiting in {}; activate it first",
            next.display()
        )));
    }
    let roots_path = dir.join(ROOT_CERT);
    let roots = read(&roots_path)?;
    let (cert, key) = generate_root(trust_domain)?;
    std::fs::create_dir_all(&next).map_err(io(&next))?;
    let cert_path = next.join(CA_CERT);
    files::write_public(&cert_path, cert.as_bytes()).map_err(io(&cert_path))?;
    let key_path = next.join(CA_KEY);
    files::write_private(&key_path, key.as_bytes()).map_err(io(&key_path))?;
    let bundle = format!("{}\n{cert}", roots.trim_end());
    files::write_public(&roots_path, bundle.as_bytes()).map_err(io(&roots_path))
}

/// Step 2: sign with the new root.
pub fn activate_root(dir: &Path) -> Result<(), RotationError> {
    let next = dir.join(NEXT_ROOT_DIR);
    if !next.exists() {
        return Err(RotationError::OutOfOrder(
            "no new root to activate; add one first".into(),
        ));
    }
    let cert = read(&next.join(CA_CERT))?;
    let key = read(&next.join(CA_KEY))?;
    // meshd refuses the directory while key and certificate disagree, so the order of
    // these writes cannot make it sign with a mismatched pair.
    let key_path = dir.join(CA_KEY);
    files::write_private(&key_path, key.as_bytes()).map_err(io(&key_path))?;
    for name in [CA_CERT, CERT_CHAIN] {
        let path = dir.join(name);
        files::write_public(&path, cert.as_bytes()).map_err(io(&path))?;
    }
    std::fs::remove_dir_all(&next).map_err(io(&next))
}

/// Step 3: trust only the active root.
pub fn retire_roots(dir: &Path) -> Result<(), RotationError> {
    if dir.join(NEXT_ROOT_DIR).exists() {
        return Err(RotationError::OutOfOrder(
            "a new root is still waiting; activate it first".into(),
        ));
    }
    let chain = read(&dir.join(CERT_CHAIN))?;
    // The root of the active chain is its last certificate.
    let last = chain
        .rfind("-----BEGIN CERTIFICATE-----")
        .map(|at| chain[at..].to_string())
        .ok_or_else(|| RotationError::OutOfOrder(format!("{CERT_CHAIN} holds no certificate")))?;
    let roots_path = dir.join(ROOT_CERT);
    files::write_public(&roots_path, last.as_bytes()).map_err(io(&roots_path))
}
