#![allow(dead_code)] // each test binary uses a part of it

//! A real xDS server on loopback for protocol-level tests, and an authenticated client's
//! pieces.

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use fleetmesh_ca::{Authenticator, Identity, TokenIssuer};
use fleetmesh_model::Snapshot;
use fleetmesh_server::{MeshState, Metrics, Registry, ServerContext, XdsServer};
use std::sync::Arc;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// One Service, `reviews`, and nothing else.
pub const REVIEWS: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}
"#;

pub fn snapshot(yaml: &str) -> Arc<MeshState> {
    let loaded = fleetmesh_api::load_documents(None, yaml).unwrap();
    Arc::new(MeshState::new(Snapshot::of_config(
        loaded.iter().map(|l| &l.resource).collect(),
    )))
}

/// A local sidecar `frontend` in namespace `default` with service account `default`.
pub fn node() -> Node {
    let text = |s: &str| Value {
        kind: Some(Kind::StringValue(s.into())),
    };
    Node {
        id: "sidecar~127.0.0.10~frontend.default~default.svc.cluster.local".into(),
        metadata: Some(Struct {
            fields: [("INTERCEPTION_MODE".to_string(), text("NONE"))].into(),
        }),
        ..Node::default()
    }
}

pub struct TestServer {
    pub address: std::net::SocketAddr,
    pub snapshots: watch::Sender<Arc<MeshState>>,
    pub shutdown: CancellationToken,
    pub tokens: TokenIssuer,
    /// The roots that sign its TLS certificate, when it serves TLS.
    pub roots: Option<String>,
    _token_dir: tempfile::TempDir,
}

impl TestServer {
    /// Serves `initial` in plaintext (as the loopback port 15010).
    pub async fn start(initial: &str) -> TestServer {
        TestServer::start_with(initial, false, None).await
    }

    /// Serves `initial` over TLS (as 15012), with a certificate for 127.0.0.1.
    pub async fn start_tls(initial: &str) -> TestServer {
        TestServer::start_with(initial, true, None).await
    }

    /// Serves `initial`, over TLS if `tls`, checking tokens with `authenticator` (by
    /// default, the server's [`TestServer::tokens`]).
    pub async fn start_with(
        initial: &str,
        tls: bool,
        authenticator: Option<Arc<dyn Authenticator>>,
    ) -> TestServer {
        TestServer::launch(
            initial,
            tls,
            authenticator,
            fleetmesh_server::MAX_CONNECTIONS,
        )
        .await
    }

    /// Serves `initial` in plaintext, keeping at most `max_connections` open.
    pub async fn start_limited(initial: &str, max_connections: usize) -> TestServer {
        TestServer::launch(initial, false, None, max_connections).await
    }

    async fn launch(
        initial: &str,
        tls: bool,
        authenticator: Option<Arc<dyn Authenticator>>,
        max_connections: usize,
    ) -> TestServer {
        let (snapshots, rx) = watch::channel(snapshot(initial));
        let mut prometheus = prometheus_client::registry::Registry::default();
        let shutdown = CancellationToken::new();
        let metrics = Arc::new(Metrics::new(&mut prometheus));
        let token_dir = tempfile::tempdir().unwrap();
        let authenticator = authenticator
            .unwrap_or_else(|| Arc::new(TokenIssuer::load_or_create(token_dir.path()).unwrap()));
        let mut roots = None;
        let server = XdsServer::single(ServerContext::new(
            rx,
            Arc::new(Registry::default()),
            metrics,
            shutdown.clone(),
            authenticator,
            None,
            fleetmesh_server::RouteDelivery::Full,
        ))
        .with_max_connections(max_connections);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let routes = tonic::service::Routes::default();
        if tls {
            let authority = fleetmesh_ca::CertificateAuthority::load_or_create(
                &token_dir.path().join("ca"),
                "cluster.local",
                std::time::Duration::from_secs(3600),
            )
            .unwrap();
            let serving = authority
                .issue_serving_certificate(
                    &["127.0.0.1".to_string()],
                    std::time::Duration::from_secs(3600),
                )
                .unwrap();
            let identity = tonic::transport::Identity::from_pem(serving.chain, serving.key);
            roots = Some(authority.roots().to_string());
            tokio::spawn(server.serve_tls(listener, routes, identity));
        } else {
            tokio::spawn(server.serve(listener, routes));
        }
        TestServer {
            address,
            snapshots,
            shutdown,
            tokens: TokenIssuer::load_or_create(token_dir.path()).unwrap(),
            roots,
            _token_dir: token_dir,
        }
    }

    /// A channel to the server, over TLS when it serves TLS.
    pub async fn channel(&self) -> tonic::transport::Channel {
        let endpoint = match &self.roots {
            Some(roots) => {
                tonic::transport::Endpoint::from_shared(format!("https://{}", self.address))
                    .unwrap()
                    .tls_config(
                        tonic::transport::ClientTlsConfig::new()
                            .ca_certificate(tonic::transport::Certificate::from_pem(roots)),
                    )
                    .unwrap()
            }
            None => {
                tonic::transport::Endpoint::from_shared(format!("http://{}", self.address)).unwrap()
            }
        };
        endpoint.connect().await.unwrap()
    }

    /// `body` as a request carrying a token for `identity`.
    pub fn authorized<T>(&self, body: T, identity: &Identity) -> tonic::Request<T> {
        let mut request = tonic::Request::new(body);
        let value = format!(
            "Bearer {}",
            self.tokens
                .issue(identity, std::time::Duration::from_secs(3600))
                .token
        );
        request
            .metadata_mut()
            .insert("authorization", value.parse().unwrap());
        request
    }
}
