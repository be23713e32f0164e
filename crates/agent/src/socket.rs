//! The agent's Unix sockets for Envoy (SDS and xDS): its own user's alone. (Envoy's admin
//! socket is Envoy's: the bootstrap asks for the same mode.)

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Binds `path` with mode 0600, so only this process's user (the proxy's uid, which
/// Envoy shares) and root can connect. A stale socket is replaced; one that another
/// process still serves is an error (two agents sharing a directory would otherwise
/// serve each other's Envoy, with each other's identity).
pub fn bind_private(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!("{} is served by another process", path.display()),
        ));
    }
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::bind_private;
    use std::os::unix::fs::PermissionsExt;

    #[tokio::test]
    async fn a_socket_is_private_and_never_taken_from_a_live_server() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("xds.sock");
        let first = bind_private(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let taken = bind_private(&path).unwrap_err();
        assert_eq!(taken.kind(), std::io::ErrorKind::AddrInUse);
        drop(first);
        // Stale once its server is gone: replaced.
        bind_private(&path).unwrap();
    }
}
