//! Envoy as a child process.
//!
//! Envoy sets `PR_SET_PDEATHSIG`: it dies when the *thread* that spawned it exits. So it is
//! spawned from a dedicated thread that lives exactly as long as Envoy does (waiting on
//! it), never from a pooled or short-lived thread.

use crate::bootstrap::{self, BootstrapConfig};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use parking_lot::Mutex;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot write the bootstrap to {path}: {source}")]
    Bootstrap {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start {envoy}: {source}")]
    Spawn {
        envoy: PathBuf,
        source: std::io::Error,
    },
}

pub struct StartOptions {
    pub envoy: PathBuf,
    /// Holds the bootstrap and Envoy's log.
    pub workdir: PathBuf,
    pub bootstrap: BootstrapConfig,
    pub log_level: String,
    /// Worker threads; Istio's sidecar default is 2.
    pub concurrency: u32,
    /// How long Envoy's own drain of listeners lasts on shutdown.
    pub drain_time: Duration,
}

pub struct EnvoyProcess {
    pid: Pid,
    /// Envoy's admin interface: a Unix socket only Envoy's own user may open.
    admin: PathBuf,
    log_path: PathBuf,
    exit: Mutex<ExitState>,
}

enum ExitState {
    Running(Receiver<std::io::Result<ExitStatus>>),
    Exited(Option<ExitStatus>),
}

impl EnvoyProcess {
    pub fn start(options: StartOptions) -> Result<EnvoyProcess, StartError> {
        std::fs::create_dir_all(&options.workdir).map_err(|source| StartError::Bootstrap {
            path: options.workdir.clone(),
            source,
        })?;
        // Envoy reads binary protobuf when the file name ends in `.pb`.
        let bootstrap_path = options.workdir.join("envoy-bootstrap.pb");
        let admin = std::path::absolute(options.workdir.join(ADMIN_SOCKET)).map_err(|source| {
            StartError::Bootstrap {
                path: options.workdir.clone(),
                source,
            }
        })?;
        let encoded = prost::Message::encode_to_vec(&bootstrap::build(&options.bootstrap, &admin));
        std::fs::write(&bootstrap_path, encoded).map_err(|source| StartError::Bootstrap {
            path: bootstrap_path.clone(),
            source,
        })?;
        let log_path = options.workdir.join("envoy.log");
        let mut command = Command::new(&options.envoy);
        command
            .arg("-c")
            .arg(&bootstrap_path)
            .args(["--disable-hot-restart", "--log-level", &options.log_level])
            .args(["--concurrency", &options.concurrency.to_string()])
            .args([
                "--drain-time-s",
                &options.drain_time.as_secs().max(1).to_string(),
            ])
            .arg("--log-path")
            .arg(&log_path)
            .envs(options.bootstrap.identity.envoy_environment())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let (pid_tx, pid_rx) = channel();
        let (exit_tx, exit_rx) = channel();
        let envoy = options.envoy.clone();
        std::thread::Builder::new()
            .name(format!("envoy-{}", options.bootstrap.identity.pod_name))
            .spawn(move || match command.spawn() {
                Ok(mut child) => {
                    let _ = pid_tx.send(Ok(child.id()));
                    let _ = exit_tx.send(child.wait());
                }
                Err(e) => {
                    let _ = pid_tx.send(Err(e));
                }
            })
            .map_err(|source| StartError::Spawn {
                envoy: envoy.clone(),
                source,
            })?;
        let pid = pid_rx
            .recv()
            .map_err(|_| StartError::Spawn {
                envoy: envoy.clone(),
                source: std::io::Error::other("spawner thread died"),
            })?
            .map_err(|source| StartError::Spawn { envoy, source })?;
        Ok(EnvoyProcess {
            pid: Pid::from_raw(pid as i32),
            admin,
            log_path,
            exit: Mutex::new(ExitState::Running(exit_rx)),
        })
    }

    /// The Unix socket of Envoy's admin interface.
    pub fn admin_socket(&self) -> &Path {
        &self.admin
    }

    pub fn log_path(&self) -> &PathBuf {
        &self.log_path
    }

    /// Waits until Envoy reports it has its initial configuration (admin `/ready` is 200).
    pub fn wait_ready(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Err(format!(
                    "Envoy exited with {status} before it was ready; see {}",
                    self.log_path.display()
                ));
            }
            if let Ok((200, _)) = admin_request(&self.admin, "GET", "/ready") {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "Envoy was not ready after {timeout:?}; see {}",
                    self.log_path.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Envoy's exit status, if it has exited.
    pub fn try_wait(&self) -> Option<ExitStatus> {
        self.wait_for(Duration::ZERO)
    }

    fn wait_for(&self, timeout: Duration) -> Option<ExitStatus> {
        let mut state = self.exit.lock();
        let status = match &*state {
            ExitState::Exited(status) => return *status,
            ExitState::Running(rx) => match rx.recv_timeout(timeout) {
                Ok(result) => result.ok(),
                Err(RecvTimeoutError::Timeout) => return None,
                Err(RecvTimeoutError::Disconnected) => None,
            },
        };
        *state = ExitState::Exited(status);
        status
    }

    /// Graceful stop: Envoy stops accepting and drains for `drain`, then gets SIGTERM.
    pub fn shutdown(&self, drain: Duration) -> Option<ExitStatus> {
        if self.try_wait().is_none() && !drain.is_zero() {
            let _ = admin_request(&self.admin, "POST", "/drain_listeners?graceful&inboundonly");
            if let Some(status) = self.wait_for(drain) {
                return Some(status);
            }
        }
        self.signal(Signal::SIGTERM);
        self.wait_for(Duration::from_secs(10)).or_else(|| {
            self.signal(Signal::SIGKILL);
            self.wait_for(Duration::from_secs(5))
        })
    }

    /// Kills Envoy at once (SIGKILL) and reaps it.
    pub fn kill(&self) {
        self.signal(Signal::SIGKILL);
        self.wait_for(Duration::from_secs(5));
    }

    fn signal(&self, signal: Signal) {
        if self.try_wait().is_none() {
            let _ = kill(self.pid, signal);
        }
    }
}

impl Drop for EnvoyProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A plain HTTP/1.1 request to Envoy's admin interface: (status, body).
pub fn admin_request(admin: &Path, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    let stream = UnixStream::connect(admin)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    http_request(stream, method, path)
}

/// Envoy's admin socket's name in the agent's working directory.
pub const ADMIN_SOCKET: &str = "admin.sock";

/// A plain HTTP/1.1 request on a connected stream, answered until EOF: (status, body).
pub fn http_request(
    mut stream: impl Read + Write,
    method: &str,
    path: &str,
) -> std::io::Result<(u16, String)> {
    // Envoy refuses HTTP/1.0 (426); 1.1 with `Connection: close` ends the response with EOF.
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(response.len());
    let head = String::from_utf8_lossy(&response[..split]);
    let body = response.get(split + 4..).unwrap_or_default();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .lines()
        .any(|l| l.to_ascii_lowercase().replace(' ', "") == "transfer-encoding:chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_vec()
    };
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Decodes an HTTP/1.1 chunked body (stops at the last chunk or at malformed input).
/// Works on bytes: a chunk boundary may fall inside a multi-byte character.
fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = body.windows(2).position(|w| w == b"\r\n") {
        let size_line = String::from_utf8_lossy(&body[..line_end]);
        let Ok(size) = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
        else {
            break;
        };
        let rest = &body[line_end + 2..];
        if size == 0 || rest.len() < size {
            break;
        }
        out.extend_from_slice(&rest[..size]);
        body = rest[size..].strip_prefix(b"\r\n").unwrap_or(&rest[size..]);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn dechunks() {
        assert_eq!(
            super::dechunk(b"5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n"),
            b"hello, world"
        );
        assert_eq!(super::dechunk(b"zz\r\nbad"), b"");
    }

    #[test]
    fn dechunks_a_chunk_that_ends_inside_a_character() {
        // "é" is two bytes; the first chunk ends between them.
        let body = "2\r\nh\u{c3}\r\n2\r\n\u{a9}!\r\n0\r\n\r\n";
        let bytes: Vec<u8> = body.chars().map(|c| c as u32 as u8).collect();
        assert_eq!(super::dechunk(&bytes), "hé!".as_bytes());
        // Non-ASCII where the size should be: rejected, never a panic.
        assert_eq!(super::dechunk("é\r\nx".as_bytes()), b"");
    }
}
