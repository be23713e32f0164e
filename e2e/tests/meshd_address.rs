//! A hosted meshd is reached by name: the agent takes `XDS_ADDRESS` as `host:port`,
//! resolves the host, and accepts meshd only if its certificate names that host. A meshd
//! whose certificate names other hosts gets no CSR (and no xDS stream: both go over the
//! same connection).

use fleetmesh_agent::Security;
use fleetmesh_agent::meshd::MeshdConnection;
use fleetmesh_agent::token::TokenFile;
use fleetmesh_ca::Identity;
use fleetmesh_meshd::{Meshd, MeshdConfig};
use std::path::Path;
use std::time::{Duration, Instant};

async fn meshd_serving(hosts: &[&str], dir: &Path) -> Meshd {
    let mut config = MeshdConfig::for_dir(dir.to_path_buf());
    config.serving_hosts = hosts.iter().map(|h| h.to_string()).collect();
    Meshd::start(config).await.expect("meshd starts")
}

/// Whether the agent's security side gets a certificate from meshd at `address` within
/// `wait`, verifying meshd with the roots in `dir`.
async fn certificate_from(meshd: &Meshd, dir: &Path, address: &str, wait: Duration) -> bool {
    let identity = Identity::new("default", "reviews");
    let workdir = tempfile::tempdir().unwrap();
    let token = workdir.path().join("token");
    std::fs::write(
        &token,
        meshd
            .issue_token(&identity, Duration::from_secs(3600))
            .token,
    )
    .unwrap();
    let connection = MeshdConnection::new(
        address,
        Some(&dir.join(".ca/root-cert.pem")),
        TokenFile::new(token),
    )
    .expect("a host:port address");
    let security = Security::start(
        &connection,
        identity.spiffe_id("cluster.local"),
        Duration::from_secs(3600),
        workdir.path(),
    )
    .expect("the agent's sockets");
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if security.current().is_some() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_reaches_meshd_by_name_and_checks_that_name() {
    let named = tempfile::tempdir().unwrap();
    let meshd = meshd_serving(&["localhost"], named.path()).await;
    let address = format!("localhost:{}", meshd.xds_tls_address().port());
    assert!(
        certificate_from(&meshd, named.path(), &address, Duration::from_secs(20)).await,
        "a certificate through meshd at {address}"
    );
    meshd.shutdown().await;

    let other = tempfile::tempdir().unwrap();
    let meshd = meshd_serving(&["127.0.0.1"], other.path()).await;
    let address = format!("localhost:{}", meshd.xds_tls_address().port());
    assert!(
        !certificate_from(&meshd, other.path(), &address, Duration::from_secs(5)).await,
        "meshd's certificate does not name localhost: the agent must refuse it"
    );
    // The same meshd by the address its certificate names: accepted.
    let address = format!("127.0.0.1:{}", meshd.xds_tls_address().port());
    assert!(certificate_from(&meshd, other.path(), &address, Duration::from_secs(20)).await);
    meshd.shutdown().await;

    assert!(
        MeshdConnection::new("meshd.example", None, TokenFile::new("/dev/null")).is_err(),
        "an address without a port is refused"
    );
}
