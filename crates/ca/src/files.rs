//! Writing the CA's files: keys are 0600 from the moment they exist, and every file is
//! replaced atomically so a crash never leaves half a key.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Replaces `path` with `contents`, readable by its owner only.
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    write_with_mode(path, contents, 0o600)
}

/// Replaces `path` with `contents`, readable by all.
pub fn write_public(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    write_with_mode(path, contents, 0o644)
}

/// The secret kept in `path`; on first use, `create` makes it from 32 random bytes and it
/// is written 0600. Refused when it is shorter than `min_len` bytes (a truncated file).
pub fn read_or_create_secret(
    path: &Path,
    min_len: usize,
    create: impl FnOnce([u8; 32]) -> Vec<u8>,
) -> std::io::Result<Vec<u8>> {
    let secret = match std::fs::read(path) {
        Ok(secret) => secret,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut random = [0u8; 32];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random)
                .map_err(|_| std::io::Error::other("no system randomness"))?;
            let secret = create(random);
            write_private(path, &secret)?;
            secret
        }
        Err(e) => return Err(e),
    };
    if secret.len() < min_len {
        return Err(std::io::Error::other(format!(
            "{} holds {} bytes; {min_len} or more are needed (delete it for a new one)",
            path.display(),
            secret.len()
        )));
    }
    Ok(secret)
}

fn write_with_mode(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let temp = path.with_extension("tmp");
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&temp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if written.is_err() {
        // A full disk, say: no half-written copy stays behind.
        let _ = std::fs::remove_file(&temp);
    }
    written
}
