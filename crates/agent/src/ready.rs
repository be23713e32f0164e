//! Waiting for Envoy to be ready: `fleetmesh-agent wait`, the injected proxy container's
//! postStart hook. The kubelet starts a pod's next container only once the hook ends, so
//! the app's first request finds its proxy configured rather than refused.
//!
//! It asks Envoy's admin on its Unix socket, not the readiness port: a connection from
//! inside the pod to the pod's own address is inbound traffic to the capture rules, and
//! under STRICT mutual TLS a plaintext one is refused.

pub use crate::process::ADMIN_SOCKET;
use crate::process::admin_request;
use std::path::Path;
use std::time::{Duration, Instant};

/// How often readiness is asked.
const POLL: Duration = Duration::from_millis(100);

/// Waits until the Envoy whose admin socket is `admin` answers `/ready` with 200 (its
/// first config in force); how long that took, or what it last said when `timeout` ran
/// out.
pub fn wait_ready(admin: &Path, timeout: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    loop {
        let last = match admin_request(admin, "GET", "/ready") {
            Ok((200, _)) => return Ok(started.elapsed()),
            Ok((status, body)) => format!("{} answered {status} {}", admin.display(), body.trim()),
            Err(error) => format!("{}: {error}", admin.display()),
        };
        if started.elapsed() >= timeout {
            return Err(format!("Envoy not ready after {timeout:?}: {last}"));
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;

    /// An admin socket answering 503 `unready` times, then 200.
    fn admin(dir: &Path, unready: usize) -> std::path::PathBuf {
        let path = dir.join(ADMIN_SOCKET);
        let listener = UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            for (n, stream) in listener.incoming().enumerate() {
                let mut stream = stream.unwrap();
                let mut request = [0u8; 1024];
                let _ = stream.read(&mut request);
                let (status, body) = if n < unready {
                    ("503 Service Unavailable", "INITIALIZING")
                } else {
                    ("200 OK", "LIVE")
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        path
    }

    #[test]
    fn waits_through_unready_answers() {
        let dir = tempfile::tempdir().unwrap();
        let took = wait_ready(&admin(dir.path(), 3), Duration::from_secs(10)).unwrap();
        assert!(took >= POLL * 3, "asked again after each 503: {took:?}");
    }

    #[test]
    fn gives_up_naming_the_last_answer() {
        let dir = tempfile::tempdir().unwrap();
        let error =
            wait_ready(&admin(dir.path(), usize::MAX), Duration::from_millis(300)).unwrap_err();
        assert!(error.contains("answered 503 INITIALIZING"), "{error}");
    }

    #[test]
    fn no_envoy_yet_is_waited_for_too() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join(ADMIN_SOCKET);
        let error = wait_ready(&missing, Duration::from_millis(200)).unwrap_err();
        assert!(error.contains("admin.sock"), "{error}");
    }
}
