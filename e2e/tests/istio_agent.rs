//! Istio's own sidecar agent (`pilot-agent`, built from the pinned Istio module by
//! `scripts/istio-build`) running upstream Envoy against meshd, as a pod with Istio's
//! injection would run it: its certificate from meshd's CA, its config over delta xDS.
//! With DNS capture on (`ISTIO_META_DNS_CAPTURE=true`) the agent asks for a name table
//! (NDS) and does not call itself ready without one; meshd serves it, and the agent's DNS
//! proxy answers the mesh's names from it.
//!
//! Nothing here leaves loopback: the platform probe is off (`CLOUD_PLATFORM=none`), the
//! mesh's endpoints are static (Envoy resolves no name), and the test asks the agent
//! only names its table holds (it would forward any other to the machine's resolver).

use fleetmesh_ca::Identity;
use fleetmesh_e2e::istiod::free_address;
use fleetmesh_e2e::*;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Istio's injection makes the agent reach istiod's plaintext port; the agent talks to
/// its CA without TLS only on a port numbered so. One address per test, as they run at
/// once.
const PLAINTEXT_XDS: [&str; 2] = ["127.0.10.10:15010", "127.0.10.11:15010"];
const REVIEWS_VIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
const BANK_VIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 20);

fn mesh_config() -> String {
    format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: reviews, namespace: default}}
spec: {{selector: {{app: reviews}}, clusterIP: {REVIEWS_VIP}, ports: [{{name: http, port: 9080}}]}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: bank, namespace: default}}
spec:
  hosts: [bank.example.com]
  addresses: [{BANK_VIP}]
  ports: [{{number: 443, name: tls, protocol: TLS}}]
  resolution: STATIC
  endpoints: [{{address: 198.51.100.21}}]
"#
    )
}

/// Istio's agent for pod `sleep-1` (service account `sleep`) in `default`, in its own
/// working directory (the agent's paths are relative, as in a pod), with every port it
/// opens on loopback and free.
struct IstioAgent {
    child: Child,
    status: SocketAddr,
    dns: SocketAddr,
    workdir: tempfile::TempDir,
}

impl IstioAgent {
    /// `delta`: delta xDS upstream (the agent's default), else state of the world.
    fn start(meshd: &str, delta: bool, token: &str) -> IstioAgent {
        let workdir = tempfile::Builder::new()
            .prefix("istio-agent-")
            .tempdir()
            .unwrap();
        let root = workdir.path();
        write(root, "var/run/secrets/tokens/istio-token", token.as_bytes());
        let template = istio_source().join("tools/packaging/common/envoy_bootstrap.json");
        write(
            root,
            "var/lib/istio/envoy/envoy_bootstrap_tmpl.json",
            &std::fs::read(&template).expect("Istio's bootstrap template"),
        );
        std::fs::create_dir_all(root.join("etc/istio/proxy")).unwrap();
        let envoy = fleetmesh_agent::envoy::locate(None).expect("envoy");
        let status = free_address();
        let dns = free_address();
        let proxy_config = serde_json::json!({
            "discoveryAddress": meshd,
            "controlPlaneAuthPolicy": "NONE",
            "binaryPath": envoy,
            "configPath": "./etc/istio/proxy",
            "statusPort": status.port(),
            "proxyAdminPort": free_address().port(),
            "drainDuration": "1s",
            "terminationDrainDuration": "1s",
        });
        let log = std::fs::File::create(root.join("agent.log")).unwrap();
        // A group of its own: the agent starts Envoy, and both go when the test ends.
        let child = Command::new(istio_build().join("bin/pilot-agent"))
            .process_group(0)
            .args(["proxy", "sidecar", "--log_output_level", "default:info"])
            .current_dir(root)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("POD_NAME", "sleep-1")
            .env("POD_NAMESPACE", "default")
            .env("INSTANCE_IP", "127.10.0.77")
            .env("SERVICE_ACCOUNT", "sleep")
            .env("PROXY_CONFIG", proxy_config.to_string())
            .env("CA_ADDR", meshd)
            .env("ISTIO_DELTA_XDS", delta.to_string())
            .env("CLOUD_PLATFORM", "none")
            .env("ISTIO_META_INTERCEPTION_MODE", "NONE")
            .env("ISTIO_META_DNS_CAPTURE", "true")
            .env("DNS_PROXY_ADDR", dns.to_string())
            .env("ENVOY_STATUS_PORT", free_address().port().to_string())
            .env("ENVOY_PROMETHEUS_PORT", free_address().port().to_string())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("pilot-agent starts");
        IstioAgent {
            child,
            status,
            dns,
            workdir,
        }
    }

    async fn ready(&self) -> Result<(), String> {
        let url = format!("http://{}/healthz/ready", self.status);
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(response) = client.get(&url).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let log =
            std::fs::read_to_string(self.workdir.path().join("agent.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        Err(format!(
            "not ready in 60 s; the agent's log ends:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ))
    }

    /// The addresses the agent's DNS proxy answers for `name` (A records).
    fn resolve(&self, name: &str) -> Vec<Ipv4Addr> {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        socket.send_to(&a_query(0x4d2, name), self.dns).unwrap();
        let mut answer = [0u8; 1500];
        let (length, _) = socket.recv_from(&mut answer).expect("a DNS answer");
        a_records(&answer[..length])
    }
}

impl Drop for IstioAgent {
    /// The agent and the Envoy it started: killing the agent alone would leave Envoy.
    fn drop(&mut self) {
        if let Ok(group) = i32::try_from(self.child.id()) {
            let _ = killpg(Pid::from_raw(group), Signal::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

fn write(root: &Path, path: &str, bytes: &[u8]) {
    let path = root.join(path);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// A DNS query (RFC 1035) for `name`'s A records, recursion desired.
fn a_query(id: u16, name: &str) -> Vec<u8> {
    let mut query = id.to_be_bytes().to_vec();
    query.extend([0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        query.push(u8::try_from(label.len()).unwrap());
        query.extend(label.as_bytes());
    }
    query.extend([0, 0, 1, 0, 1]);
    query
}

/// The A records in the answer section of a DNS `response`.
fn a_records(response: &[u8]) -> Vec<Ipv4Addr> {
    let count = |at: usize| usize::from(u16::from_be_bytes([response[at], response[at + 1]]));
    let (questions, answers) = (count(4), count(6));
    let mut at = 12;
    let skip_name = |mut at: usize| {
        loop {
            match response[at] {
                0 => return at + 1,
                length if length & 0xc0 == 0xc0 => return at + 2,
                length => at += 1 + usize::from(length),
            }
        }
    };
    for _ in 0..questions {
        at = skip_name(at) + 4;
    }
    let mut found = Vec::new();
    for _ in 0..answers {
        at = skip_name(at);
        let (kind, length) = (count(at), count(at + 8));
        at += 10;
        if kind == 1 && length == 4 {
            found.push(Ipv4Addr::new(
                response[at],
                response[at + 1],
                response[at + 2],
                response[at + 3],
            ));
        }
        at += length;
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istios_agent_on_delta_xds_gets_its_name_table_and_answers_the_meshs_names() {
    agent_answers_the_meshs_names(PLAINTEXT_XDS[0], true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istios_agent_on_state_of_the_world_xds_gets_its_name_table_too() {
    agent_answers_the_meshs_names(PLAINTEXT_XDS[1], false).await;
}

async fn agent_answers_the_meshs_names(meshd: &str, delta: bool) {
    let mesh = LocalMesh::start_configured(None, XdsMode::Delta, |c| {
        c.xds_address = meshd.parse().unwrap();
    })
    .await
    .unwrap();
    mesh.write("services.yaml", &mesh_config()).unwrap();
    let token = mesh
        .meshd()
        .issue_token(
            &Identity::new("default", "sleep"),
            Duration::from_secs(3600),
        )
        .token;
    let agent = IstioAgent::start(meshd, delta, &token);
    agent.ready().await.unwrap();
    assert_eq!(
        agent.resolve("reviews.default.svc.cluster.local"),
        [REVIEWS_VIP],
        "a Service's name answers with its ClusterIP"
    );
    assert_eq!(
        agent.resolve("reviews.default"),
        [REVIEWS_VIP],
        "and its short forms, by the table's short name and namespace"
    );
    assert_eq!(
        agent.resolve("bank.example.com"),
        [BANK_VIP],
        "a ServiceEntry's host answers with its address"
    );

    // A Service's new ClusterIP reaches the agent's table (pushed on change). Only names
    // the table holds all along are asked: the agent would forward any other outside.
    let moved = Ipv4Addr::new(198, 51, 100, 13);
    let config = mesh_config().replace(&REVIEWS_VIP.to_string(), &moved.to_string());
    mesh.write("services.yaml", &config).unwrap();
    eventually(
        "the Service's new address",
        Duration::from_secs(30),
        async || (agent.resolve("reviews.default.svc.cluster.local") == [moved]).then_some(()),
    )
    .await;
}
