//! meshd: wires config sources to the model, the model to the xDS server, and serves
//! metrics and istiod's debug endpoints.

#![warn(missing_docs)]

mod admin;
mod auth;
mod authorities;
mod channels;
/// meshd's flags and settings.
pub mod config;
mod debug;
pub mod fleet;
mod http;
mod http_server;
mod ingest;
mod jwks;
pub mod local;
mod mesh_config;
mod status_page;
mod webhook;

pub use config::MeshdConfig;

use anyhow::Context;
use fleetmesh_ca::{CaService, CertificateAuthority, Identity, IssuedToken, TokenIssuer};
use fleetmesh_server::{MeshState, Metrics, Registry, ServerContext, XdsServer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How often the managed data plane's status is reconciled.
pub(crate) const DATA_PLANE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// How long meshd's own serving certificate lives (a new one is issued on every start).
const SERVING_CERT_TTL: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 3600);

/// A running meshd.
pub struct Meshd {
    /// Follow the config and CA directories for as long as meshd runs.
    _watchers: (notify::RecommendedWatcher, notify::RecommendedWatcher),
    addresses: Addresses,
    state_dir: std::path::PathBuf,
    admin_token_file: std::path::PathBuf,
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

/// The ports meshd serves, bound before anything else so that a taken port fails fast.
struct Ports {
    xds: tokio::net::TcpListener,
    xds_tls: tokio::net::TcpListener,
    http: tokio::net::TcpListener,
    webhook: tokio::net::TcpListener,
}

/// Where [`Ports`] listen (the configured addresses, with the ports chosen for `:0`).
#[derive(Debug, Clone, Copy)]
struct Addresses {
    xds: SocketAddr,
    xds_tls: SocketAddr,
    http: SocketAddr,
    webhook: SocketAddr,
}

impl Ports {
    fn addresses(&self) -> std::io::Result<Addresses> {
        Ok(Addresses {
            xds: self.xds.local_addr()?,
            xds_tls: self.xds_tls.local_addr()?,
            http: self.http.local_addr()?,
            webhook: self.webhook.local_addr()?,
        })
    }

    async fn bind(config: &MeshdConfig) -> anyhow::Result<Ports> {
        let xds = fleet_listener(config.xds_address).with_context(|| {
            format!(
                "cannot listen for xDS on {} (is another meshd running?)",
                config.xds_address
            )
        })?;
        let http = tokio::net::TcpListener::bind(config.http_address)
            .await
            .with_context(|| format!("cannot listen for HTTP on {}", config.http_address))?;
        let xds_tls = fleet_listener(config.xds_tls_address).with_context(|| {
            format!(
                "cannot listen for xDS over TLS on {}",
                config.xds_tls_address
            )
        })?;
        let webhook = tokio::net::TcpListener::bind(config.webhook_address)
            .await
            .with_context(|| format!("cannot listen for webhooks on {}", config.webhook_address))?;
        Ok(Ports {
            xds,
            xds_tls,
            http,
            webhook,
        })
    }
}

/// meshd's CA (and its projects'), the tokens it issues in local mode, its own serving
/// certificate, and the management API's admin token.
struct Credentials {
    admin: Arc<admin::AdminToken>,
    /// meshd's own CA and its projects' CAs.
    authorities: Arc<authorities::Authorities>,
    /// Follows the CA directory (root rotation); dropping it stops that.
    ca_watcher: notify::RecommendedWatcher,
    tokens: Arc<TokenIssuer>,
    /// The names meshd's certificate is for; the first is where webhooks are called.
    serving_hosts: Vec<String>,
    webhook_tls: Arc<rustls::ServerConfig>,
    xds_identity: tonic::transport::Identity,
}

impl Credentials {
    /// What install writes into a cluster so that its webhooks and proxies reach meshd.
    fn install_info(
        &self,
        webhook: SocketAddr,
        xds_address: String,
        config: &MeshdConfig,
    ) -> http::InstallInfo {
        http::InstallInfo {
            webhook_url: format!("https://{}:{}", self.serving_hosts[0], webhook.port()),
            xds_address,
            trust_domain: config.trust_domain.clone(),
            own_cluster: config.cluster_id.clone(),
            authority: self.authorities.own(),
        }
    }

    fn load(config: &MeshdConfig, webhook_address: SocketAddr) -> anyhow::Result<Credentials> {
        let authorities = Arc::new(
            authorities::Authorities::load(
                &config.ca_dir,
                &config.trust_domain,
                config.max_cert_ttl,
            )
            .context("loading the mesh CA")?,
        );
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
        let serving = authorities
            .own()
            .borrow()
            .issue_serving_certificate(&serving_hosts, SERVING_CERT_TTL)
            .context("issuing meshd's serving certificate")?;
        let webhook_tls = webhook::tls_config(&serving)?;
        let xds_identity = tonic::transport::Identity::from_pem(&serving.chain, &serving.key);
        let ca_watcher = authorities::watch(authorities.clone())?;
        let admin = admin::AdminToken::load_or_create(&config.state_dir)
            .with_context(|| format!("the admin token in {}", config.state_dir.display()))?;
        Ok(Credentials {
            admin: Arc::new(admin),
            authorities,
            ca_watcher,
            tokens,
            serving_hosts,
            webhook_tls,
            xds_identity,
        })
    }
}

/// What meshd runs for its cluster, when it has one.
struct ClusterParts {
    source: Arc<fleetmesh_kube::ClusterSource>,
    /// The clusters its remote secrets name.
    remotes: Arc<fleetmesh_kube::remote::RemoteClusters>,
    reviewer: fleetmesh_kube::token_review::TokenReviewer,
    /// Keeps the mesh's root certificate in every namespace.
    root_cert_publisher: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    /// The managed data plane's controller.
    data_plane: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
}

impl ClusterParts {
    /// Connects to the cluster of `config.kubeconfig`, if it names one.
    async fn connect(
        config: &MeshdConfig,
        egress: &fleetmesh_kube::egress::EgressPolicy,
        changes: tokio::sync::mpsc::UnboundedSender<fleetmesh_model::Trigger>,
        authority: watch::Receiver<Arc<CertificateAuthority>>,
        published: fleetmesh_dataplane::controller::Published,
        channels: fleetmesh_inject::versions::ChannelTable,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Option<ClusterParts>> {
        let Some(kubeconfig) = &config.kubeconfig else {
            return Ok(None);
        };
        let client = cluster_client(kubeconfig, true).await?;
        let (source, remotes) = ingest::watch_cluster(&client, config, egress, &changes).await?;
        let root_cert_publisher = Box::pin(fleetmesh_kube::root_cert::publish(
            client.clone(),
            vec![authority],
        ));
        let data_plane = Box::pin(fleetmesh_dataplane::controller::run(
            cluster_client(kubeconfig, false).await?,
            DATA_PLANE_INTERVAL,
            config.data_plane_eviction_pace,
            channels,
            published,
            shutdown,
        ));
        Ok(Some(ClusterParts {
            source,
            remotes,
            reviewer: fleetmesh_kube::token_review::TokenReviewer::new(client),
            root_cert_publisher,
            data_plane,
        }))
    }
}

impl Meshd {
    /// Binds the ports, loads the CA, connects to the cluster (if any), builds the first
    /// snapshot, and starts serving: xDS and the CA (plain and TLS), webhooks, HTTP.
    pub async fn start(config: MeshdConfig) -> anyhow::Result<Meshd> {
        let ports = Ports::bind(&config).await?;
        let addresses = ports.addresses()?;
        std::fs::create_dir_all(&config.state_dir)
            .with_context(|| format!("the state directory {}", config.state_dir.display()))?;
        let credentials = Credentials::load(&config, addresses.webhook)?;
        let advertised_xds = config
            .advertise_xds_address
            .clone()
            .unwrap_or_else(|| addresses.xds_tls.to_string());
        let shutdown = CancellationToken::new();
        let fleet = open_fleet(&config, &shutdown).await?;
        let egress = tenant_egress(&config)?;
        let mut tasks = JoinSet::new();
        let mut prometheus = prometheus_client::registry::Registry::default();
        let metrics = Arc::new(Metrics::new(&mut prometheus));
        let mesh = OwnMesh::start(
            &config,
            &egress,
            &credentials,
            &metrics,
            &mut tasks,
            &shutdown,
        )
        .await?;
        let registry = Arc::new(Registry::default());
        let settings = fleet::members::MemberSettings {
            config: config.clone(),
            egress: egress.clone(),
            registry: registry.clone(),
            metrics: metrics.clone(),
            authorities: credentials.authorities.clone(),
            channels: mesh.channels,
            shutdown: shutdown.clone(),
        };
        let members = fleet::members::Members::start(settings, fleet.clone());
        let reviewer = mesh.cluster.map(|c| {
            spawn_until(&mut tasks, &shutdown, c.root_cert_publisher);
            // It stops itself on shutdown, after releasing its Lease.
            tasks.spawn(c.data_plane);
            c.reviewer
        });
        let authenticator = Arc::new(auth::MeshAuthenticator {
            tokens: credentials.tokens.clone(),
            cluster: reviewer,
        });
        let own = ServerContext::new(
            mesh.states,
            registry.clone(),
            metrics.clone(),
            shutdown.clone(),
            authenticator.clone(),
            None,
            config.route_delivery(),
        );
        let members_too = Arc::new(fleet::members::MeshdRouter {
            own,
            own_authenticator: authenticator,
            own_authority: credentials.authorities.own(),
            members: members.clone(),
        });
        let xds = XdsServer::routed(members_too.clone(), shutdown.clone());
        let ca = CaService::routed(members_too);
        let install = credentials.install_info(addresses.webhook, advertised_xds, &config);
        let identity = credentials.xds_identity;
        serve_xds(&mut tasks, xds, ca, ports.xds, ports.xds_tls, identity);
        let versions = mesh.proxy_versions;
        let webhooks = webhook::WebhookState::new(&config, &install, versions, &members, &metrics);
        let tls = credentials.webhook_tls;
        tasks.spawn(webhook::serve(
            ports.webhook,
            tls,
            webhooks,
            shutdown.clone(),
        ));
        let state = http::HttpState {
            prometheus: Arc::new(prometheus),
            registry,
            source: mesh.local.clone(),
            rollouts: mesh.rollouts,
            fleet,
            members,
            egress,
            install,
        };
        let router = http::router(state, credentials.admin);
        serve_http(&mut tasks, ports.http, router, shutdown.clone());
        tracing::info!(?addresses, config_dir = %config.config_dir.display(), "meshd serving");
        Ok(Meshd {
            _watchers: (mesh.watcher, credentials.ca_watcher),
            addresses,
            state_dir: config.state_dir.clone(),
            admin_token_file: config.state_dir.join(admin::FILE),
            metrics,
            source: mesh.local,
            tokens: credentials.tokens,
            shutdown,
            tasks,
        })
    }

    /// Where proxies on this host reach ADS and the CA (plaintext, loopback).
    pub fn xds_address(&self) -> SocketAddr {
        self.addresses.xds
    }

    /// Metrics, istiod's debug endpoints and the install API.
    pub fn http_address(&self) -> SocketAddr {
        self.addresses.http
    }

    /// xDS and the CA over TLS.
    pub fn xds_tls_address(&self) -> SocketAddr {
        self.addresses.xds_tls
    }

    /// The admission webhooks' HTTPS address.
    pub fn webhook_address(&self) -> SocketAddr {
        self.addresses.webhook
    }

    /// The file holding the management API's admin token (what the CLI reads).
    pub fn admin_token_file(&self) -> &std::path::Path {
        &self.admin_token_file
    }

    /// Where meshd keeps its state (the fleet, members' credentials, the admin token).
    pub fn state_dir(&self) -> &std::path::Path {
        &self.state_dir
    }

    /// The control plane's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// A token proving `identity` to this meshd (and to any meshd sharing its CA dir) for
    /// `lifetime`, for a workload's agent to present to the CA and the xDS server.
    pub fn issue_token(&self, identity: &Identity, lifetime: Duration) -> IssuedToken {
        self.tokens.issue(identity, lifetime)
    }

    /// Revokes the token `id`: it proves nothing from its next use on.
    pub fn revoke_token(&self, id: &str) -> std::io::Result<()> {
        self.tokens.revoke(id)
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

/// The fleet registry: `fleet.json` in the state directory, or, with
/// `--registry-kubeconfig`, shared with other replicas in a host cluster.
async fn open_fleet(
    config: &MeshdConfig,
    shutdown: &CancellationToken,
) -> anyhow::Result<Arc<fleet::Fleet>> {
    let Some(kubeconfig) = &config.registry_kubeconfig else {
        let fleet = fleet::Fleet::load(&config.state_dir)
            .with_context(|| format!("the fleet state in {}", config.state_dir.display()))?;
        return Ok(Arc::new(fleet));
    };
    let client = cluster_client(kubeconfig, true).await?;
    let namespace = &config.registry_namespace;
    fleet::Fleet::in_host_cluster(&config.state_dir, client, namespace, shutdown.clone())
        .await
        .with_context(|| {
            format!(
                "the fleet registry in namespace {namespace} of {}",
                kubeconfig.display()
            )
        })
}

/// meshd's own mesh: its config directory and `--kubeconfig` cluster, read into the
/// states its proxies are served from.
struct OwnMesh {
    local: Arc<local::LocalSource>,
    states: watch::Receiver<Arc<MeshState>>,
    cluster: Option<ClusterParts>,
    /// Each revision's proxy version (from the cluster's DataPlaneControls).
    proxy_versions: fleetmesh_dataplane::controller::ProxyVersionsWatch,
    /// Each revision's rollout (the DataPlaneControls' status), for the status page.
    rollouts: watch::Receiver<fleetmesh_dataplane::controller::Rollouts>,
    /// The proxy versions this meshd knows (`--channels`).
    channels: fleetmesh_inject::versions::ChannelTable,
    /// Follows the config directory; dropping it stops that.
    watcher: notify::RecommendedWatcher,
}

impl OwnMesh {
    /// Reads the sources, builds the first snapshot, and publishes the next after every
    /// (debounced) change until shutdown.
    async fn start(
        config: &MeshdConfig,
        egress: &fleetmesh_kube::egress::EgressPolicy,
        credentials: &Credentials,
        metrics: &Arc<Metrics>,
        tasks: &mut JoinSet<()>,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<OwnMesh> {
        let channels = channels::load(config.channels.as_deref())?;
        let local = Arc::new(local::LocalSource::new(config));
        // Watch before the first read, so no change falls between the two.
        let (changes_tx, changes) = tokio::sync::mpsc::unbounded_channel();
        let watcher = local::watch(&config.config_dir, changes_tx.clone())?;
        // Without a cluster there are no DataPlaneControls: every revision injects its
        // channel's version. With one, the controller publishes them once read.
        let known = config
            .kubeconfig
            .is_none()
            .then(|| channels.proxy_versions());
        let (proxy_versions_tx, proxy_versions) = watch::channel(known);
        let (rollouts_tx, rollouts) = watch::channel(Default::default());
        let published = fleetmesh_dataplane::controller::Published {
            proxy_versions: proxy_versions_tx,
            rollouts: rollouts_tx,
        };
        let cluster = ClusterParts::connect(
            config,
            egress,
            changes_tx.clone(),
            credentials.authorities.own(),
            published,
            channels.clone(),
            shutdown.clone(),
        )
        .await?;
        let cluster_sources = cluster
            .as_ref()
            .map(|c| (c.source.clone(), c.remotes.clone()));
        let sources = ingest::Sources::new(
            config,
            egress,
            Some(local.clone()),
            cluster_sources,
            changes_tx,
        );
        let (states, publishing) = ingest::publish_changes(sources, changes, metrics.clone());
        spawn_until(tasks, shutdown, publishing);
        Ok(OwnMesh {
            local,
            states,
            cluster,
            proxy_versions,
            rollouts,
            channels,
            watcher,
        })
    }
}

/// Serves ADS with the CA beside it, on the plain port (loopback, local proxies) and the
/// TLS one (proxies elsewhere: their tokens never cross a network in the clear).
fn serve_xds(
    tasks: &mut JoinSet<()>,
    server: XdsServer,
    ca: CaService,
    plain: tokio::net::TcpListener,
    tls: tokio::net::TcpListener,
    identity: tonic::transport::Identity,
) {
    let tls_server = server.clone();
    let tls_ca = ca.clone();
    tasks.spawn(async move {
        let ca = tonic::service::Routes::new(ca.into_server());
        if let Err(e) = server.serve(plain, ca).await {
            tracing::error!(error = %e, "xDS server failed");
        }
    });
    tasks.spawn(async move {
        let ca = tonic::service::Routes::new(tls_ca.into_server());
        if let Err(e) = tls_server.serve_tls(tls, ca, identity).await {
            tracing::error!(error = %e, "xDS TLS server failed");
        }
    });
}

/// Serves metrics, istiod's debug endpoints and the install API until shutdown.
fn serve_http(
    tasks: &mut JoinSet<()>,
    listener: tokio::net::TcpListener,
    router: axum::Router,
    stop: CancellationToken,
) {
    let limits = http_server::Limits::default();
    tasks.spawn(http_server::serve(listener, None, router, limits, stop));
}

/// Where meshd may dial on a tenant's behalf (`--tenant-egress-deny`); the stricter
/// policy for `jwksUri`s (`--jwks-egress-deny`) is checked here too, so that each mesh's
/// JWKS fetcher can build it without failing.
fn tenant_egress(config: &MeshdConfig) -> anyhow::Result<fleetmesh_kube::egress::EgressPolicy> {
    let egress = fleetmesh_kube::egress::EgressPolicy::denying(&config.tenant_egress_deny)
        .context("--tenant-egress-deny")?;
    egress
        .also_denying(&config.jwks_egress_deny)
        .context("--jwks-egress-deny")?;
    Ok(egress)
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
