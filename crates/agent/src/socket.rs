//! The agent's Unix sockets (Envoy's admin, SDS and xDS): its own user's alone.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Binds `path` (replacing a stale socket) with mode 0600, so only this process's user
/// (the proxy's uid, which Envoy shares) and root can connect.
pub fn bind_private(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}
