use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// meshd's settings: flags, each with an environment fallback.
#[derive(Parser, Debug, Clone, serde::Serialize)]
#[command(
    name = "meshd",
    version,
    about = "The fleetmesh control plane: serves Istio config to Envoy proxies over xDS"
)]
pub struct MeshdConfig {
    /// Directory of Kubernetes-style YAML (Services, WorkloadEntries, VirtualServices, ...),
    /// read recursively and watched for changes.
    #[arg(long, env = "MESHD_CONFIG_DIR", default_value = "./mesh")]
    pub config_dir: PathBuf,
    /// A Kubernetes cluster to watch for Services, EndpointSlices and Pods (its services
    /// join those of --config-dir). Without it, meshd serves the config dir alone.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Where proxies connect for xDS (plaintext gRPC, like istiod's 15010).
    #[arg(long, env = "MESHD_XDS_ADDRESS", default_value = "127.0.0.1:15010")]
    pub xds_address: SocketAddr,
    /// Metrics (/metrics) and debug endpoints (/debug/syncz, /debug/config_dump).
    #[arg(long, env = "MESHD_HTTP_ADDRESS", default_value = "127.0.0.1:15014")]
    pub http_address: SocketAddr,
    /// The admission webhooks (sidecar injection, config validation), HTTPS with a
    /// certificate from the mesh CA; like istiod's 15017.
    #[arg(long, env = "MESHD_WEBHOOK_ADDRESS", default_value = "127.0.0.1:15017")]
    pub webhook_address: SocketAddr,
    /// xDS and the CA over TLS (like istiod's 15012), with a certificate from the mesh CA:
    /// what proxies outside meshd's host use (injected pods do).
    #[arg(long, env = "MESHD_XDS_TLS_ADDRESS", default_value = "127.0.0.1:15012")]
    pub xds_tls_address: SocketAddr,
    /// Host names or IPs clusters use to reach meshd (comma-separated): the names in the
    /// certificate of the webhook and xDS TLS ports. Default: the webhook address's IP.
    #[arg(
        long,
        env = "MESHD_SERVING_HOSTS",
        value_delimiter = ',',
        alias = "webhook-hosts"
    )]
    pub serving_hosts: Vec<String>,
    /// meshd's xDS TLS address as injected proxies reach it. Default: --xds-tls-address.
    #[arg(long, env = "MESHD_ADVERTISE_XDS_ADDRESS")]
    pub advertise_xds_address: Option<String>,
    /// Where meshd keeps its own state (the fleet's member clusters).
    #[arg(
        long,
        env = "MESHD_STATE_DIR",
        default_value = "./var/lib/fleetmesh/state"
    )]
    pub state_dir: PathBuf,
    /// DNS domain of Kubernetes services.
    #[arg(long, env = "MESHD_DOMAIN", default_value = fleetmesh_model::DEFAULT_DOMAIN)]
    pub domain: String,
    /// Namespace whose Sidecar and DestinationRules apply mesh-wide.
    #[arg(long, env = "MESHD_ROOT_NAMESPACE", default_value = "istio-system")]
    pub root_namespace: String,
    /// Cluster id for local workloads.
    #[arg(long, env = "MESHD_CLUSTER_ID", default_value = "local")]
    pub cluster_id: String,
    /// Quiet time after a config change before pushing (changes within it merge).
    #[arg(long, env = "MESHD_DEBOUNCE_AFTER", default_value = "100ms", value_parser = parse_duration)]
    #[serde(with = "humantime")]
    pub debounce_after: Duration,
    /// Longest a change may wait while changes keep coming.
    #[arg(long, env = "MESHD_DEBOUNCE_MAX", default_value = "2s", value_parser = parse_duration)]
    #[serde(with = "humantime")]
    pub debounce_max: Duration,
    /// The mesh CA's directory, in Istio's `cacerts` layout (`ca-cert.pem`, `ca-key.pem`,
    /// `cert-chain.pem`, `root-cert.pem`): put an existing mesh's plug-in certs there to
    /// keep its root; without them a root is created on first start. It also holds the
    /// key of the workload tokens meshd issues, and each fleet project's CA (its own root
    /// and trust domain) in `projects/PROJECT/`, in the same layout. Keys are 0600.
    #[arg(long, env = "MESHD_CA_DIR", default_value = "./var/lib/fleetmesh/ca")]
    pub ca_dir: PathBuf,
    /// The SPIFFE trust domain of workload certificates.
    #[arg(long, env = "MESHD_TRUST_DOMAIN", default_value = "cluster.local")]
    pub trust_domain: String,
    /// The longest certificate lifetime a workload may ask for (the default it gets is 24h).
    #[arg(long, env = "MESHD_MAX_CERT_TTL", default_value = "2160h", value_parser = parse_duration)]
    #[serde(with = "humantime")]
    pub max_cert_ttl: Duration,
    /// The managed data plane evicts at most one pod per this long (a rollout of a few
    /// hundred pods spreads over a day).
    #[arg(long, env = "MESHD_DATA_PLANE_EVICTION_PACE", default_value = "5m", value_parser = parse_duration)]
    #[serde(with = "humantime")]
    pub data_plane_eviction_pace: Duration,
    /// Networks meshd never dials on a tenant's behalf (comma-separated CIDRs), such as
    /// the API servers remote secrets name: the provider's own networks. Link-local
    /// (cloud metadata), multicast and "this network" are refused whatever this says. The
    /// default keeps a hosted meshd's own host out of reach; a meshd beside local clusters
    /// (the README's multi-cluster flow) passes `--tenant-egress-deny=` to allow loopback.
    #[arg(
        long,
        env = "MESHD_TENANT_EGRESS_DENY",
        value_delimiter = ',',
        default_value = "127.0.0.0/8,::1/128"
    )]
    pub tenant_egress_deny: Vec<String>,
    /// Networks denied to `jwksUri` fetches besides `--tenant-egress-deny`: by default the
    /// private ranges, where a provider's own services live (a tenant's API server may be
    /// private; an issuer's keys are published). `--jwks-egress-deny=` allows them.
    #[arg(
        long,
        env = "MESHD_JWKS_EGRESS_DENY",
        value_delimiter = ',',
        default_value = "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,100.64.0.0/10,fc00::/7"
    )]
    pub jwks_egress_deny: Vec<String>,
    /// A member cluster with no connected proxy and no webhook call for this long is
    /// scaled to zero: its watches and snapshot are dropped until a proxy connects or a
    /// webhook is called again (which wakes it).
    #[arg(long, env = "MESHD_IDLE_AFTER", default_value = "15m", value_parser = parse_duration)]
    #[serde(with = "humantime")]
    pub idle_after: Duration,
    /// Keep the fleet registry (projects, memberships, member credentials) in this
    /// Kubernetes cluster instead of `STATE_DIR/fleet.json`, so that several meshd
    /// replicas share it (they must share `--ca-dir` too). meshd creates its CRD
    /// (`fleetregistries.fleetmesh.io`), the namespace and the registry object there.
    #[arg(long, env = "MESHD_REGISTRY_KUBECONFIG")]
    pub registry_kubeconfig: Option<PathBuf>,
    /// The namespace of the host cluster the registry lives in.
    #[arg(
        long,
        env = "MESHD_REGISTRY_NAMESPACE",
        default_value = "fleetmesh-system"
    )]
    pub registry_namespace: String,
    /// Override revisions' proxy versions (YAML, `REVISION: PROXY_VERSION` per line); by
    /// default each revision runs the version this release's channel table pins. A newer
    /// version than a DataPlaneControl names moves it forward (a rollout); an older one
    /// never moves it back.
    #[arg(long, env = "MESHD_CHANNELS")]
    pub channels: Option<PathBuf>,
    /// Sidecars on delta xDS streams fetch each outbound virtual host when they first call
    /// its host (VHDS), instead of holding every service's: less memory in each Envoy,
    /// and a route change goes only to the sidecars that called that host, as one small
    /// resource. Sidecars on state-of-the-world streams get every virtual host as before.
    #[arg(long, env = "MESHD_ON_DEMAND_ROUTES")]
    pub on_demand_routes: bool,
    /// Log format: `text` or `json`.
    #[arg(long, env = "MESHD_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

impl MeshdConfig {
    /// How sidecars get their outbound virtual hosts (`--on-demand-routes`).
    pub fn route_delivery(&self) -> fleetmesh_server::RouteDelivery {
        fleetmesh_server::RouteDelivery::on_demand_if(self.on_demand_routes)
    }
}

fn parse_duration(text: &str) -> Result<Duration, fleetmesh_api::duration::InvalidDuration> {
    fleetmesh_api::Duration::parse(text).map(|d| d.as_std())
}

impl MeshdConfig {
    /// Defaults for a config directory, with ports picked by the OS (tests, the demo).
    pub fn for_dir(config_dir: PathBuf) -> MeshdConfig {
        let mut config = MeshdConfig::parse_from(["meshd"]);
        // Beside the config, hidden so the config loader skips it.
        config.ca_dir = config_dir.join(".ca");
        config.state_dir = config_dir.join(".state");
        config.config_dir = config_dir;
        // Never a cluster picked up from the environment's KUBECONFIG.
        config.kubeconfig = None;
        config.registry_kubeconfig = None;
        config.xds_address = "127.0.0.1:0".parse().unwrap();
        config.http_address = "127.0.0.1:0".parse().unwrap();
        config.webhook_address = "127.0.0.1:0".parse().unwrap();
        config.xds_tls_address = "127.0.0.1:0".parse().unwrap();
        // Local clusters serve on loopback.
        config.tenant_egress_deny = Vec::new();
        config.jwks_egress_deny = Vec::new();
        config
    }
}

mod humantime {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", d.as_millis()))
    }
}
