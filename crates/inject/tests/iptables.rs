//! The `istio-init` script (images/proxyv2/fleetmesh-iptables) in a network namespace of
//! this test's own (`unshare -n`, a veth pair whose far end nobody answers): the app's
//! outbound connection lands on the proxy's outbound port; the proxy's own connection is
//! not redirected; inbound traffic goes to the inbound port except the excluded ports.
//! Needs root and iptables (scripts/install-peers installs it).

use std::path::Path;
use std::process::Command;

const SCENARIO: &str = r#"
set -eu
ip link set lo up
ip link add pod type veth peer name peer
ip link set pod up
ip link set peer up
ip addr add 10.99.0.1/24 dev pod
"$SCRIPT" --proxy-uid 1337 --outbound-port 15001 --inbound-port 15006 --exclude-inbound-ports 15090,15021,15020
python3 - <<'PY'
import encodings.idna, os, socket, threading  # loaded before dropping root
proxy = socket.socket()
proxy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
proxy.bind(("0.0.0.0", 15001))
proxy.listen()
def serve():
    while True:
        connection, _ = proxy.accept()
        connection.sendall(b"outbound-capture")
        connection.close()
threading.Thread(target=serve, daemon=True).start()

def connect(uid):
    pid = os.fork()
    if pid == 0:
        os.setuid(uid)
        try:
            s = socket.create_connection(("10.99.0.2", 8080), timeout=1)
            os._exit(0 if s.recv(64) == b"outbound-capture" else 3)
        except OSError:
            os._exit(4)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])

print("app:", "redirected" if connect(1000) == 0 else "direct")
print("proxy:", "redirected" if connect(1337) == 0 else "direct")
PY
iptables-save -t nat
"#;

fn script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../images/proxyv2/fleetmesh-iptables")
        .canonicalize()
        .expect("the script exists")
}

#[test]
fn redirects_the_app_but_not_the_proxy() {
    let output = Command::new("unshare")
        .args(["--net", "sh", "-c", SCENARIO])
        .env("SCRIPT", script())
        .output()
        .expect("unshare runs (util-linux)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("app: redirected"), "{stdout}");
    assert!(stdout.contains("proxy: direct"), "{stdout}");
    for rule in [
        "-A PREROUTING -p tcp -j ISTIO_INBOUND",
        "-A ISTIO_INBOUND -p tcp -m tcp --dport 15020 -j RETURN",
        "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
    ] {
        assert!(stdout.contains(rule), "missing {rule}:\n{stdout}");
    }
}

#[test]
fn bad_arguments_are_named() {
    let output = Command::new(script())
        .arg("--proxy-uid")
        .arg("x")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("x is not a number"));
}
