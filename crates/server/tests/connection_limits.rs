//! Limits on every connection to the xDS ports (15010, and 15012 with TLS, where
//! proxies of every tenant's clusters connect): a client that never finishes its TLS
//! handshake is dropped, and one connection may not open streams without end.

mod common;

use common::TestServer;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

#[tokio::test]
async fn a_connection_may_open_only_a_few_streams_at_once() {
    let server = TestServer::start("").await;
    let tcp = tokio::net::TcpStream::connect(server.address)
        .await
        .unwrap();
    let (_requests, mut connection) = h2::client::handshake(tcp).await.unwrap();
    // The server's SETTINGS arrive as the connection runs.
    let _ = tokio::time::timeout(Duration::from_millis(500), &mut connection).await;
    assert_eq!(
        connection.max_concurrent_send_streams(),
        fleetmesh_server::MAX_STREAMS_PER_CONNECTION as usize,
        "the server's SETTINGS_MAX_CONCURRENT_STREAMS"
    );
}

#[tokio::test]
async fn a_client_that_never_finishes_its_tls_handshake_is_dropped() {
    let server = TestServer::start_tls("").await;
    let mut silent = tokio::net::TcpStream::connect(server.address)
        .await
        .unwrap();
    let started = Instant::now();
    let mut buffer = [0u8; 64];
    // Nothing sent: meshd closes the connection once the handshake time is up.
    let read = tokio::time::timeout(
        fleetmesh_server::HANDSHAKE_TIMEOUT * 3,
        silent.read(&mut buffer),
    )
    .await
    .expect("meshd closes the connection");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(started.elapsed() >= fleetmesh_server::HANDSHAKE_TIMEOUT / 2);
}
