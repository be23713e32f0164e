//! Serving HTTP on a port others may reach (the webhook port 15017, over TLS: the
//! tenant's API server calls it, but nothing stops others from connecting; and the
//! metrics and debug port 15014, on loopback unless an operator moves it), with every
//! connection bounded: a handshake, a request head and an idle connection each have a
//! deadline, HTTP/2 streams per connection are capped, no connection lives forever, and
//! past a number of open connections new ones are closed at once. A slow or silent client
//! holds a task for seconds, not for ever.

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// HTTP/2 connections are pinged this often; one that does not answer within the
/// header timeout is closed.
const KEEPALIVE: Duration = Duration::from_secs(30);
/// Streams one HTTP/2 connection may have open at once (the API server sends one per
/// admission call).
const MAX_STREAMS: u32 = 64;
/// Requests in flight when a connection is asked to close get this long to finish.
const CLOSE_GRACE: Duration = Duration::from_secs(10);

/// The deadlines and limits of every connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A TLS handshake that takes longer is dropped.
    pub handshake: Duration,
    /// A connection whose first request has not begun by then is closed, and so is an
    /// HTTP/1 connection that takes longer to send a request head (idle ones included).
    pub header: Duration,
    /// After this, a connection is asked to close (the API server opens another), so
    /// that none lives for ever.
    pub max_age: Duration,
    /// Open connections at most; more are closed as soon as they are accepted.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            handshake: Duration::from_secs(10),
            header: Duration::from_secs(10),
            max_age: Duration::from_secs(600),
            max_connections: 4_096,
        }
    }
}

/// Serves `router` on `listener`, over TLS when `tls` is given, within `limits` until
/// `stop`; then lets requests in flight finish, closes every connection and returns
/// once they are closed. Handlers may extract `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Router,
    limits: Limits,
    stop: CancellationToken,
) {
    let acceptor = tls.map(TlsAcceptor::from);
    let mut connections = JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            () = stop.cancelled() => break,
        };
        if connections.len() >= limits.max_connections {
            tracing::debug!(%peer, "too many open connections: closed a new one");
            continue;
        }
        let acceptor = acceptor.clone();
        let service = FirstRequest::new(router.clone(), peer);
        let stop = stop.clone();
        connections.spawn(async move {
            let Some(acceptor) = acceptor else {
                let io = TokioIo::new(stream);
                return serve_connection(io, None, service, limits, stop).await;
            };
            let handshake = tokio::time::timeout(limits.handshake, acceptor.accept(stream));
            let tls = tokio::select! {
                done = handshake => match done {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                },
                () = stop.cancelled() => return,
            };
            // The protocol is the one TLS agreed on, so no bytes are awaited to guess it.
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            serve_connection(TokioIo::new(tls), Some(h2), service, limits, stop).await;
        });
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// Serves one connection in HTTP/2 when `h2`, HTTP/1.1 when not, and, when unknown (no
/// TLS), in the protocol its first bytes show.
async fn serve_connection<I>(
    io: TokioIo<I>,
    h2: Option<bool>,
    service: FirstRequest,
    limits: Limits,
    stop: CancellationToken,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let builder = bounded_builder(h2, limits);
    let begun = service.begun.clone();
    let peer = service.peer;
    let connection = builder.serve_connection(io, service);
    let mut connection = std::pin::pin!(connection);
    let silent = async {
        tokio::time::sleep(limits.header).await;
        if begun.load(Ordering::Relaxed) {
            std::future::pending().await
        }
    };
    let served = tokio::select! {
        served = connection.as_mut() => served,
        () = silent => {
            tracing::debug!(%peer, "no request in time: closed");
            return;
        }
        () = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
        () = tokio::time::sleep(limits.max_age) => {
            connection.as_mut().graceful_shutdown();
            tokio::time::timeout(CLOSE_GRACE, connection)
                .await
                .unwrap_or(Ok(()))
        }
    };
    if let Err(e) = served {
        tracing::debug!(%peer, error = %e, "connection ended");
    }
}

/// A connection builder with the deadlines and limits above, for HTTP/2 or HTTP/1.1 as
/// `h2` says (either, when it does not).
fn bounded_builder(h2: Option<bool>, limits: Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS)
        .keep_alive_interval(KEEPALIVE)
        .keep_alive_timeout(limits.header);
    match h2 {
        Some(true) => builder.http2_only(),
        Some(false) => builder.http1_only(),
        None => builder,
    }
}

/// A connection's service: tells handlers the peer's address, and notes when the first
/// request begins.
#[derive(Clone)]
struct FirstRequest {
    router: TowerToHyperService<Router>,
    peer: SocketAddr,
    begun: Arc<AtomicBool>,
}

impl FirstRequest {
    fn new(router: Router, peer: SocketAddr) -> FirstRequest {
        FirstRequest {
            router: TowerToHyperService::new(router),
            peer,
            begun: Arc::default(),
        }
    }
}

impl<B> hyper::service::Service<hyper::Request<B>> for FirstRequest
where
    TowerToHyperService<Router>: hyper::service::Service<hyper::Request<B>>,
{
    type Response =
        <TowerToHyperService<Router> as hyper::service::Service<hyper::Request<B>>>::Response;
    type Error = <TowerToHyperService<Router> as hyper::service::Service<hyper::Request<B>>>::Error;
    type Future =
        <TowerToHyperService<Router> as hyper::service::Service<hyper::Request<B>>>::Future;

    fn call(&self, mut request: hyper::Request<B>) -> Self::Future {
        self.begun.store(true, Ordering::Relaxed);
        request.extensions_mut().insert(ConnectInfo(self.peer));
        self.router.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::ServerName;
    use rustls::pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const SHORT: Limits = Limits {
        handshake: Duration::from_millis(500),
        header: Duration::from_millis(500),
        max_age: Duration::from_secs(60),
        max_connections: 3,
    };

    /// A server of `GET /` on loopback within `limits`, and a client config trusting it.
    async fn server(
        dir: &std::path::Path,
        limits: Limits,
    ) -> (std::net::SocketAddr, rustls::ClientConfig) {
        let hour = Duration::from_secs(3600);
        let authority =
            fleetmesh_ca::CertificateAuthority::load_or_create(dir, "cluster.local", hour).unwrap();
        let serving = authority
            .issue_serving_certificate(&["127.0.0.1".to_string()], hour)
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let router = Router::new().route("/", axum::routing::get(|| async { "served" }));
        let tls = crate::webhook::tls_config(&serving).unwrap();
        tokio::spawn(serve(
            listener,
            Some(tls),
            router,
            limits,
            CancellationToken::new(),
        ));
        let mut roots = rustls::RootCertStore::empty();
        let pem = authority.roots().as_bytes();
        for root in rustls::pki_types::CertificateDer::pem_slice_iter(pem) {
            roots.add(root.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (address, client)
    }

    async fn connect(
        address: std::net::SocketAddr,
        client: &rustls::ClientConfig,
        alpn: &[u8],
    ) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let mut client = client.clone();
        client.alpn_protocols = vec![alpn.to_vec()];
        let tcp = tokio::net::TcpStream::connect(address).await?;
        let name = ServerName::try_from("127.0.0.1").unwrap();
        tokio_rustls::TlsConnector::from(Arc::new(client))
            .connect(name, tcp)
            .await
    }

    /// Whether the server closes `tls` (with no request sent) within a few deadlines.
    async fn closed_soon(mut tls: tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> bool {
        let mut buffer = Vec::new();
        let read = tokio::time::timeout(SHORT.header * 6, tls.read_to_end(&mut buffer)).await;
        // An HTTP/2 server sends its settings first; then the connection ends.
        read.is_ok()
    }

    #[tokio::test]
    async fn a_client_that_sends_no_request_is_closed_in_either_protocol() {
        let dir = tempfile::tempdir().unwrap();
        let (address, client) = server(dir.path(), SHORT).await;
        for alpn in [&b"http/1.1"[..], b"h2"] {
            let tls = connect(address, &client, alpn).await.unwrap();
            assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn));
            assert!(closed_soon(tls).await, "{}", String::from_utf8_lossy(alpn));
        }
        // A silent TCP connection never finishing its handshake too.
        let mut silent = tokio::net::TcpStream::connect(address).await.unwrap();
        let read = tokio::time::timeout(SHORT.handshake * 6, silent.read(&mut [0; 8])).await;
        assert!(matches!(read, Ok(Ok(0) | Err(_))), "{read:?}");
    }

    #[tokio::test]
    async fn requests_are_answered_and_connections_past_the_limit_closed() {
        let dir = tempfile::tempdir().unwrap();
        // Deadlines long enough that no connection ends during the test.
        let patient = Limits {
            header: Duration::from_secs(30),
            handshake: Duration::from_secs(30),
            ..SHORT
        };
        let (address, client) = server(dir.path(), patient).await;
        let mut tls = connect(address, &client, b"http/1.1").await.unwrap();
        tls.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut answer = [0u8; 512];
        let read = tls.read(&mut answer).await.unwrap();
        let answer = String::from_utf8_lossy(&answer[..read]);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("served"), "{answer}");

        // Two more open, silent: the limit of three is reached and a fourth is closed
        // before its handshake completes.
        let _held = [
            connect(address, &client, b"http/1.1").await.unwrap(),
            connect(address, &client, b"http/1.1").await.unwrap(),
        ];
        assert!(connect(address, &client, b"http/1.1").await.is_err());
    }

    #[tokio::test]
    async fn plaintext_connections_are_bounded_too_and_handlers_see_the_peer() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let router = Router::new().route(
            "/",
            axum::routing::get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move {
                peer.ip().to_string()
            }),
        );
        tokio::spawn(serve(
            listener,
            None,
            router,
            SHORT,
            CancellationToken::new(),
        ));

        let mut client = tokio::net::TcpStream::connect(address).await.unwrap();
        client
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut answer = [0u8; 512];
        let read = client.read(&mut answer).await.unwrap();
        let answer = String::from_utf8_lossy(&answer[..read]);
        assert!(answer.ends_with("127.0.0.1"), "{answer}");

        let mut silent = tokio::net::TcpStream::connect(address).await.unwrap();
        let read = tokio::time::timeout(SHORT.header * 6, silent.read(&mut [0; 8])).await;
        assert!(matches!(read, Ok(Ok(0) | Err(_))), "{read:?}");
    }
}
