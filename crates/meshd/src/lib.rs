//! meshd: wires config sources to the model, the model to the xDS server, and serves
//! metrics and istiod's debug endpoints.

mod auth;
mod ca_files;
pub mod config;
mod debug;
pub mod fleet;
mod http;
mod jwks;
pub mod local;
mod mesh_config;
mod webhook;

pub use config::MeshdConfig;

use anyhow::Context;
use fleetmesh_ca::{CaService, CertificateAuthority, Identity, TokenIssuer};
use fleetmesh_server::debounce::Debounce;
use fleetmesh_server::{MeshState, Metrics, Registry, XdsServer};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How often the managed data plane's status is reconciled.
const DATA_PLANE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// How long meshd's own serving certificate lives (a new one is issued on every start).
const SERVING_CERT_TTL: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 3600);

/// A running meshd.
pub struct Meshd {
    xds_address: SocketAddr,
    http_address: SocketAddr,
    webhook_address: SocketAddr,
    xds_tls_address: SocketAddr,
    metrics: Arc<Metrics>,
    source: Arc<local::LocalSource>,
    tokens: Arc<TokenIssuer>,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
}

/// Connections a proxy port queues before meshd accepts them (the kernel caps it at
/// `net.core.somaxconn`). A whole fleet reconnects at once after a restart or a network
/// blip; with the default of 1024, connects beyond it wait for SYN retransmits.
const FLEET_BACKLOG: u32 = 4096;

/// A listener for the ports proxies connect to.
fn fleet_listener(address: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = match address {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(FLEET_BACKLOG)
}

impl Meshd {
    /// Binds the ports, loads the config and starts serving.
    pub async fn start(config: MeshdConfig) -> anyhow::Result<Meshd> {
        let xds_listener = fleet_listener(config.xds_address).with_context(|| {
            format!(
                "cannot listen for xDS on {} (is another meshd running?)",
                config.xds_address
            )
        })?;
        let http_listener = tokio::net::TcpListener::bind(config.http_address)
            .await
            .with_context(|| format!("cannot listen for HTTP on {}", config.http_address))?;
        let xds_tls_listener = fleet_listener(config.xds_tls_address).with_context(|| {
            format!(
                "cannot listen for xDS over TLS on {}",
                config.xds_tls_address
            )
        })?;
        let xds_tls_address = xds_tls_listener.local_addr()?;
        let webhook_listener = tokio::net::TcpListener::bind(config.webhook_address)
            .await
            .with_context(|| format!("cannot listen for webhooks on {}", config.webhook_address))?;
        let xds_address = xds_listener.local_addr()?;
        let http_address = http_listener.local_addr()?;
        let webhook_address = webhook_listener.local_addr()?;
        let fleet = Arc::new(
            fleet::Fleet::load(&config.state_dir)
                .with_context(|| format!("the fleet state in {}", config.state_dir.display()))?,
        );

        let authority = CertificateAuthority::load_or_create(
            &config.ca_dir,
            &config.trust_domain,
            config.max_cert_ttl,
        )
        .context("loading the mesh CA")?;
        let tokens = Arc::new(
            TokenIssuer::load_or_create(&config.ca_dir)
                .with_context(|| format!("token key in {}", config.ca_dir.display()))?,
        );
        let serving_hosts = if config.serving_hosts.is_empty() {
            vec![webhook_address.ip().to_string()]
        } else {
            config.serving_hosts.clone()
        };
        // meshd's own certificate, for the webhook and xDS TLS ports; a new one on every
        // start.
        let serving = authority
            .issue_serving_certificate(&serving_hosts, SERVING_CERT_TTL)
            .context("issuing meshd's serving certificate")?;
        let webhook_tls = webhook::tls_config(&serving)?;
        let xds_identity = tonic::transport::Identity::from_pem(&serving.chain, &serving.key);
        let advertised_xds = config
            .advertise_xds_address
            .clone()
            .unwrap_or_else(|| xds_tls_address.to_string());
        let (authority_tx, authority_rx) = watch::channel(Arc::new(authority));
        let install = http::InstallInfo {
            webhook_url: format!("https://{}:{}", serving_hosts[0], webhook_address.port()),
            xds_address: advertised_xds.clone(),
            trust_domain: config.trust_domain.clone(),
            authority: authority_rx.clone(),
        };
        let ca_watcher = ca_files::watch(config.clone(), authority_tx)?;

        let mut prometheus = prometheus_client::registry::Registry::default();
        let metrics = Arc::new(Metrics::new(&mut prometheus));
        let registry = Arc::new(Registry::default());
        let shutdown = CancellationToken::new();
        let source = Arc::new(local::LocalSource::new(&config));
        // Watch before the first read, so no change falls between the two.
        let (changes_tx, changes) = tokio::sync::mpsc::unbounded_channel();
        let watcher = local::watch(&config.config_dir, changes_tx.clone())?;
        let changes_tx_for_jwks = changes_tx.clone();
        let mut root_cert_publisher = None;
        let mut data_plane = None;
        // Without a cluster there are no DataPlaneControls: every revision injects its
        // channel's version. With one, the controller publishes them once read.
        let known = config.kubeconfig.is_none().then(Default::default);
        let (proxy_versions_tx, proxy_versions) = watch::channel(known);
        let (cluster, reviewer) = match &config.kubeconfig {
            Some(path) => {
                let client = cluster_client(path, true).await?;
                let source = fleetmesh_kube::ClusterSource::start(
                    client.clone(),
                    &config.cluster_id,
                    &config.domain,
                    &config.root_namespace,
                    changes_tx,
                )
                .await?;
                root_cert_publisher = Some(fleetmesh_kube::root_cert::publish(
                    client.clone(),
                    authority_rx.clone(),
                ));
                data_plane = Some(fleetmesh_dataplane::controller::run(
                    cluster_client(path, false).await?,
                    DATA_PLANE_INTERVAL,
                    config.data_plane_eviction_pace,
                    proxy_versions_tx.clone(),
                    shutdown.clone(),
                ));
                let reviewer = fleetmesh_kube::token_review::TokenReviewer::new(client);
                (Some(Arc::new(source)), Some(reviewer))
            }
            None => (None, None),
        };
        let authenticator = Arc::new(auth::MeshAuthenticator {
            tokens: tokens.clone(),
            cluster: reviewer,
        });
        let ca = CaService::new(authority_rx, authenticator.clone());
        let mesh_config = mesh_config::MeshConfig::new(fleetmesh_model::MeshSettings {
            root_namespace: config.root_namespace.clone(),
            trust_domain: config.trust_domain.clone(),
            ..Default::default()
        });
        let jwks = jwks::JwksCache::new(changes_tx_for_jwks);
        let build = move |source: &local::LocalSource| {
            let services = cluster.as_ref().map(|c| c.services()).unwrap_or_default();
            let workloads = cluster.as_ref().map(|c| c.workloads()).unwrap_or_default();
            let resources = cluster.as_ref().map(|c| c.resources()).unwrap_or_default();
            let mesh =
                mesh_config.settings(cluster.as_ref().and_then(|c| c.mesh_config()).as_deref());
            let mut snapshot = source.reload(services, workloads, &resources, mesh);
            if let Some(cluster) = &cluster {
                snapshot.credentials = cluster.credentials();
                snapshot.secret_readers =
                    cluster.secret_readers(snapshot.credential_readers_wanted());
            }
            snapshot.jwks = jwks.resolve(
                snapshot
                    .request_authentications
                    .iter()
                    .flat_map(|r| &r.spec.jwt_rules)
                    .filter_map(|rule| rule.jwks_uri.as_deref()),
            );
            snapshot
        };
        let (snapshots_tx, snapshots) = watch::channel(Arc::new(MeshState::new(build(&source))));

        let mut tasks = JoinSet::new();
        let debounce = Debounce {
            after: config.debounce_after,
            max_delay: config.debounce_max,
        };
        let reloading = source.clone();
        let stop = shutdown.clone();
        tasks.spawn(async move {
            // Dropping them stops the file events.
            let _watchers = (watcher, ca_watcher);
            let publish = || {
                let next = snapshots_tx.borrow().next(build(&reloading));
                // An unchanged mesh (a pod's status, an unrelated object) is not pushed.
                if let Some(next) = next {
                    snapshots_tx.send_replace(Arc::new(next));
                }
            };
            tokio::select! {
                () = debounce.run(changes, publish) => {}
                () = stop.cancelled() => {}
            }
        });
        let server = XdsServer::new(
            snapshots.clone(),
            registry.clone(),
            metrics.clone(),
            shutdown.clone(),
            authenticator,
        );
        if let Some(publisher) = root_cert_publisher {
            spawn_until(&mut tasks, &shutdown, publisher);
        }
        if let Some(controller) = data_plane {
            // It stops itself on shutdown, after releasing its Lease.
            tasks.spawn(controller);
        }
        let tls_server = server.clone();
        let tls_ca = ca.clone();
        tasks.spawn(async move {
            let ca = tonic::service::Routes::new(ca.into_server());
            if let Err(e) = server.serve(xds_listener, ca).await {
                tracing::error!(error = %e, "xDS server failed");
            }
        });
        tasks.spawn(async move {
            let ca = tonic::service::Routes::new(tls_ca.into_server());
            if let Err(e) = tls_server
                .serve_tls(xds_tls_listener, ca, xds_identity)
                .await
            {
                tracing::error!(error = %e, "xDS TLS server failed");
            }
        });
        let webhooks = webhook::WebhookState {
            xds_address: advertised_xds,
            trust_domain: config.trust_domain.clone(),
            proxy_versions,
        };
        tasks.spawn(webhook::serve(
            webhook_listener,
            webhook_tls,
            webhooks,
            shutdown.clone(),
        ));
        let state = http::HttpState {
            prometheus: Arc::new(prometheus),
            registry,
            source: source.clone(),
            fleet,
            install,
        };
        let stop = shutdown.clone();
        tasks.spawn(async move {
            let app = http::router(state);
            let served = axum::serve(http_listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "HTTP server failed");
            }
        });
        tracing::info!(%xds_address, %xds_tls_address, %http_address, %webhook_address, config_dir = %config.config_dir.display(), "meshd serving");
        Ok(Meshd {
            xds_address,
            http_address,
            webhook_address,
            xds_tls_address,
            metrics,
            source,
            tokens,
            shutdown,
            tasks,
        })
    }

    pub fn xds_address(&self) -> SocketAddr {
        self.xds_address
    }

    pub fn http_address(&self) -> SocketAddr {
        self.http_address
    }

    /// xDS and the CA over TLS.
    pub fn xds_tls_address(&self) -> SocketAddr {
        self.xds_tls_address
    }

    /// The admission webhooks' HTTPS address.
    pub fn webhook_address(&self) -> SocketAddr {
        self.webhook_address
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// A token proving `identity` to this meshd (and to any meshd sharing its CA dir), for
    /// a workload's agent to present to the CA and the xDS server.
    pub fn issue_token(&self, identity: &Identity) -> String {
        self.tokens.issue(identity)
    }

    /// Errors of the config files that are currently rejected.
    pub fn config_errors(&self) -> Vec<String> {
        self.source.errors()
    }

    /// Stops serving: streams end, ports close, tasks finish.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Runs `work` among meshd's tasks until it ends or meshd shuts down.
fn spawn_until(
    tasks: &mut JoinSet<()>,
    shutdown: &CancellationToken,
    work: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let stop = shutdown.clone();
    tasks.spawn(async move {
        tokio::select! {
            () = work => {}
            () = stop.cancelled() => {}
        }
    });
}

/// A client for the cluster of `kubeconfig`; `retry`: transient refusals (429, 503) are
/// retried inside the client. The managed data plane wants none: a PDB's 429 is an
/// answer to act on, not to wait out.
async fn cluster_client(kubeconfig: &std::path::Path, retry: bool) -> anyhow::Result<kube::Client> {
    let mut client_config = fleetmesh_kube::client_config(kubeconfig).await?;
    client_config.default_retry = retry;
    Ok(kube::Client::try_from(client_config)?)
}
