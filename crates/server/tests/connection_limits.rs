//! Limits on every connection to the xDS ports (15010, and 15012 with TLS, where
//! proxies of every tenant's clusters connect): a client that never finishes its TLS
//! handshake is dropped, one connection may not open streams without end, and past a
//! number of open connections a new one is closed at once.

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

#[tokio::test]
async fn past_the_connection_limit_a_new_connection_is_closed_at_once() {
    let server = TestServer::start_limited("", 3).await;
    let connect = async || {
        tokio::net::TcpStream::connect(server.address)
            .await
            .unwrap()
    };
    let mut held = vec![connect().await, connect().await, connect().await];
    // Closed once accepted: it reads the end at once (no HTTP/2 settings first).
    let closed = async |mut stream: tokio::net::TcpStream| {
        let mut buffer = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer)).await;
        matches!(read, Ok(Ok(0) | Err(_)))
    };
    assert!(closed(connect().await).await, "a fourth connection");
    // One of the three goes: its place is free again, and a new connection is served.
    drop(held.pop());
    // A served connection gets the server's HTTP/2 settings first.
    let served = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let mut tcp = connect().await;
            let mut buffer = [0u8; 64];
            if matches!(tcp.read(&mut buffer).await, Ok(n) if n > 0) {
                return tcp;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(served.is_ok(), "a connection once a place is free");
}
