//! Serving HTTPS on a port any network peer may reach (the webhook port 15017: the
//! tenant's API server calls it, but nothing stops others from connecting), with every
//! connection bounded: a handshake, a request head and an idle connection each have a
//! deadline, HTTP/2 streams per connection are capped, no connection lives forever, and
//! past a number of open connections new ones are closed at once. A slow or silent client
//! holds a task for seconds, not for ever.

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
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

/// Serves `router` over TLS on `listener` within `limits` until `stop`, then lets
/// requests in flight finish, closes every connection and returns once they are closed.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    limits: Limits,
    stop: CancellationToken,
) {
    let acceptor = TlsAcceptor::from(tls);
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
        let service = FirstRequest::new(router.clone());
        let stop = stop.clone();
        connections.spawn(async move {
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
            let builder = bounded_builder(h2, limits);
            let begun = service.begun.clone();
            let connection = builder.serve_connection(TokioIo::new(tls), service);
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
        });
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// A connection builder for HTTP/2 when `h2`, else HTTP/1.1, with the deadlines and
/// limits above.
fn bounded_builder(h2: bool, limits: Limits) -> auto::Builder<TokioExecutor> {
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
    if h2 {
        builder.http2_only()
    } else {
        builder.http1_only()
    }
}

/// A connection's service, noting when its first request begins.
#[derive(Clone)]
struct FirstRequest {
    router: TowerToHyperService<Router>,
    begun: Arc<AtomicBool>,
}

impl FirstRequest {
    fn new(router: Router) -> FirstRequest {
        FirstRequest {
            router: TowerToHyperService::new(router),
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

    fn call(&self, request: hyper::Request<B>) -> Self::Future {
        self.begun.store(true, Ordering::Relaxed);
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
            tls,
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
}
