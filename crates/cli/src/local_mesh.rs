//! A mesh on this machine: meshd, and workloads that each get a loopback address of their
//! own (127.x.y.z), a sample app and a real Envoy sidecar started through the agent.
//! The demo runs on it, and so do the end-to-end tests.

use crate::sample_app::SampleApp;
use anyhow::Context;
use fleetmesh_agent::meshd::MeshdConnection;
use fleetmesh_agent::process::StartOptions;
use fleetmesh_agent::token::TokenFile;
use fleetmesh_agent::{BootstrapConfig, EnvoyProcess, Security, WorkloadIdentity, XdsMode, envoy};
use fleetmesh_ca::Identity;
use fleetmesh_meshd::{Meshd, MeshdConfig};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// How long the local mesh's proxies' tokens prove their identity: longer than a demo or
/// test runs. Workloads of a mesh that runs for good get theirs from `fleetmesh token`.
const PROXY_TOKEN_LIFETIME: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

/// The label that ties a workload to its own WorkloadEntry and Sidecar.
pub const WORKLOAD_LABEL: &str = "fleetmesh.io/workload";
pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";
const ENVOY_READY_TIMEOUT: Duration = Duration::from_secs(30);

pub struct LocalMesh {
    config_dir: PathBuf,
    run_dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    meshd: Option<Meshd>,
    meshd_config: MeshdConfig,
    envoy: PathBuf,
    xds_mode: XdsMode,
    /// Lifetime of workload certificates (24h, Istio's default, unless a test shortens it).
    pub cert_ttl: Duration,
}

/// How a Kubernetes pod's proxy reaches meshd.
pub struct PodConnection {
    /// The pod's projected service-account token (audience `istio-ca`); a secret.
    pub token: String,
    /// The mesh roots (PEM file): TLS to meshd's TLS port. `None`: plaintext.
    pub meshd_roots: Option<PathBuf>,
    /// The cluster the pod runs in, as injection tells its proxy (`CLUSTER_ID`).
    pub cluster_id: String,
    /// Its mesh's trust domain, as injection tells its proxy (`TRUST_DOMAIN`): meshd's
    /// own, or a fleet member's project's.
    pub trust_domain: String,
}

#[derive(Debug, Clone)]
pub struct WorkloadSpec {
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    /// The port the sidecar accepts traffic on (the service's target port).
    pub port: u16,
    /// The version the sample app reports.
    pub version: String,
    /// Where it runs (`region/zone/subzone`), in its WorkloadEntry.
    pub locality: Option<String>,
}

impl WorkloadSpec {
    pub fn new(name: &str, labels: &[(&str, &str)], port: u16) -> WorkloadSpec {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let version = labels
            .get("version")
            .cloned()
            .unwrap_or_else(|| "v1".into());
        WorkloadSpec {
            name: name.into(),
            namespace: "default".into(),
            labels,
            port,
            version,
            locality: None,
        }
    }

    /// The same workload, running in `locality` (`region/zone/subzone`).
    pub fn in_locality(mut self, locality: &str) -> WorkloadSpec {
        self.locality = Some(locality.into());
        self
    }
}

/// A running workload: its app (if any) and its Envoy.
pub struct Workload {
    pub name: String,
    pub ip: Ipv4Addr,
    pub app: Option<SampleApp>,
    pub envoy: EnvoyProcess,
    /// The workload's certificate, served to its Envoy over SDS.
    pub security: Security,
    pub node_id: String,
    /// `spiffe://cluster.local/ns/NS/sa/SA`.
    pub spiffe_id: String,
    /// The file the agent reads its token from (mode 0600), for every CSR and xDS stream.
    pub token_file: PathBuf,
}

impl Workload {
    /// The sidecar's outbound listener, which the app uses as its HTTP proxy.
    pub fn proxy_url(&self) -> String {
        format!("http://{}:15001", self.ip)
    }

    /// An HTTP client that sends everything through this workload's sidecar.
    pub fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .proxy(reqwest::Proxy::http(self.proxy_url()).expect("valid proxy URL"))
            .timeout(Duration::from_secs(20))
            .build()
            .expect("HTTP client builds")
    }

    pub fn address(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.ip.into(), port)
    }
}

impl LocalMesh {
    /// Starts meshd on `config_dir` (a fresh temporary directory if `None`).
    pub async fn start(
        config_dir: Option<PathBuf>,
        xds_mode: XdsMode,
    ) -> anyhow::Result<LocalMesh> {
        LocalMesh::start_with(config_dir, xds_mode, None).await
    }

    /// Like [`LocalMesh::start`], with meshd also watching the cluster of `kubeconfig`.
    pub async fn start_with(
        config_dir: Option<PathBuf>,
        xds_mode: XdsMode,
        kubeconfig: Option<PathBuf>,
    ) -> anyhow::Result<LocalMesh> {
        LocalMesh::start_configured(config_dir, xds_mode, |c| c.kubeconfig = kubeconfig).await
    }

    /// Like [`LocalMesh::start`], with meshd's settings changed by `configure` (a cluster
    /// to watch, its cluster id).
    pub async fn start_configured(
        config_dir: Option<PathBuf>,
        xds_mode: XdsMode,
        configure: impl FnOnce(&mut MeshdConfig),
    ) -> anyhow::Result<LocalMesh> {
        let (config_dir, temp) = match config_dir {
            Some(dir) => (dir, None),
            None => {
                let temp = tempfile::Builder::new().prefix("fleetmesh-").tempdir()?;
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        std::fs::create_dir_all(&config_dir)
            .with_context(|| format!("creating {}", config_dir.display()))?;
        // Hidden, so meshd's loader skips it.
        let run_dir = config_dir.join(".run");
        std::fs::create_dir_all(&run_dir)?;
        let envoy = envoy::locate(None).map_err(anyhow::Error::msg)?;
        let mut meshd_config = MeshdConfig::for_dir(config_dir.clone());
        configure(&mut meshd_config);
        let meshd = Meshd::start(meshd_config.clone()).await?;
        meshd_config.xds_address = meshd.xds_address();
        Ok(LocalMesh {
            config_dir,
            run_dir,
            _temp: temp,
            meshd: Some(meshd),
            meshd_config,
            envoy,
            xds_mode,
            cert_ttl: fleetmesh_ca::authority::DEFAULT_TTL,
        })
    }

    pub fn config_dir(&self) -> &Path {
        &self.config_dir
    }

    pub fn meshd(&self) -> &Meshd {
        self.meshd.as_ref().expect("meshd is running")
    }

    /// Writes a config file atomically (meshd never reads half a file).
    pub fn write(&self, file: &str, yaml: &str) -> anyhow::Result<()> {
        let path = self.config_dir.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let temp = self.run_dir.join(format!("{}.tmp", file.replace('/', "_")));
        std::fs::write(&temp, yaml)?;
        std::fs::rename(&temp, &path)?;
        Ok(())
    }

    pub fn remove(&self, file: &str) -> anyhow::Result<()> {
        std::fs::remove_file(self.config_dir.join(file)).with_context(|| format!("removing {file}"))
    }

    /// Stops meshd and starts a new one on the same ports and config.
    pub async fn restart_meshd(&mut self) -> anyhow::Result<()> {
        self.stop_meshd().await;
        self.start_meshd().await
    }

    pub async fn stop_meshd(&mut self) {
        if let Some(meshd) = self.meshd.take() {
            meshd.shutdown().await;
        }
    }

    pub async fn start_meshd(&mut self) -> anyhow::Result<()> {
        self.meshd = Some(Meshd::start(self.meshd_config.clone()).await?);
        Ok(())
    }

    /// The IP of Pod `namespace/name` in the watched cluster, if there is such a Pod. A
    /// proxy run here for a Pod reports it after its own loopback address, as the Pod's
    /// own agent would report it, and meshd matches the proxy to the Pod only then. (The
    /// address is only reported: nothing here binds it or sends to it.)
    async fn pod_ip(&self, namespace: &str, name: &str) -> anyhow::Result<Option<String>> {
        let Some(path) = &self.meshd_config.kubeconfig else {
            return Ok(None);
        };
        let client = kube::Client::try_from(fleetmesh_kube::client_config(path).await?)?;
        let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
            kube::Api::namespaced(client, namespace);
        let pod = pods
            .get_opt(name)
            .await
            .with_context(|| format!("looking up Pod {namespace}/{name}"))?;
        Ok(pod.and_then(|p| p.status?.pod_ip))
    }

    /// Starts a workload: its sample app, its WorkloadEntry and Sidecar in the config
    /// dir, and its Envoy; returns once Envoy has its initial config.
    pub async fn add_workload(&self, spec: WorkloadSpec) -> anyhow::Result<Workload> {
        let ip = allocate_ip()?;
        let app = SampleApp::start(
            (Ipv4Addr::LOCALHOST, 0).into(),
            spec.labels.get("app").unwrap_or(&spec.name),
            &spec.version,
        )
        .await?;
        let mut labels = spec.labels.clone();
        labels.insert(WORKLOAD_LABEL.into(), spec.name.clone());
        // Istio's mark of a workload with a sidecar: clients reach it with mutual TLS.
        labels.insert(TLS_MODE_LABEL.into(), "istio".into());
        self.write(
            &format!("workloads/{}.yaml", spec.name),
            &workload_yaml(&spec, ip, &labels, app.address()),
        )?;
        let identity = Identity::new(&spec.namespace, &service_account(&labels));
        let mut workload = self
            .start_proxy("sidecar", &spec.name, &identity, ip, &labels, None)
            .await?;
        workload.app = Some(app);
        Ok(workload)
    }

    /// Starts a gateway Envoy (router mode) with `labels`, which Gateways select.
    pub async fn add_gateway(
        &self,
        name: &str,
        namespace: &str,
        labels: &[(&str, &str)],
    ) -> anyhow::Result<Workload> {
        let account = format!("{name}-service-account");
        self.add_proxy("router", name, namespace, &account, labels)
            .await
    }

    /// Starts an Envoy alone, with the identity of a workload that lives elsewhere (a
    /// Kubernetes pod, say); `kind` is `sidecar` or `router`. Its token proves
    /// `namespace`/`service_account`, which must be the Pod's when it is one.
    pub async fn add_proxy(
        &self,
        kind: &str,
        name: &str,
        namespace: &str,
        service_account: &str,
        labels: &[(&str, &str)],
    ) -> anyhow::Result<Workload> {
        let ip = allocate_ip()?;
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let identity = Identity::new(namespace, service_account);
        self.start_proxy(kind, name, &identity, ip, &labels, None)
            .await
    }

    /// Starts an Envoy as a Kubernetes pod's proxy would run: proving its identity with
    /// the pod's projected service-account token (meshd checks it with the cluster's
    /// TokenReview), its labels coming from the Pod, and, given the mesh roots (what the
    /// pod mounts from ConfigMap `istio-ca-root-cert`), reaching meshd over TLS.
    pub async fn add_pod_proxy(
        &self,
        kind: &str,
        pod_name: &str,
        namespace: &str,
        service_account: &str,
        connection: PodConnection,
    ) -> anyhow::Result<Workload> {
        let ip = allocate_ip()?;
        let identity = Identity::new(namespace, service_account);
        self.start_proxy(
            kind,
            pod_name,
            &identity,
            ip,
            &BTreeMap::new(),
            Some(connection),
        )
        .await
    }

    /// Starts a workload's agent side (its certificate over SDS) and its Envoy, connected
    /// as `pod` says (default: plaintext, with a token meshd issues for its identity);
    /// returns once Envoy has its initial config.
    async fn start_proxy(
        &self,
        kind: &str,
        name: &str,
        identity: &Identity,
        ip: Ipv4Addr,
        labels: &BTreeMap<String, String>,
        pod: Option<PodConnection>,
    ) -> anyhow::Result<Workload> {
        let namespace = identity.namespace.as_str();
        let pod = pod.unwrap_or_else(|| PodConnection {
            token: self
                .meshd()
                .issue_token(identity, PROXY_TOKEN_LIFETIME)
                .token,
            meshd_roots: None,
            cluster_id: self.meshd_config.cluster_id.clone(),
            trust_domain: self.meshd_config.trust_domain.clone(),
        });
        let PodConnection {
            token,
            meshd_roots,
            cluster_id,
            trust_domain,
        } = pod;
        let xds_address = if meshd_roots.is_some() {
            self.meshd().xds_tls_address()
        } else {
            self.meshd_config.xds_address
        };
        let pod_ip = self.pod_ip(namespace, name).await?;
        let spiffe_id = identity.spiffe_id(&trust_domain);
        // One directory per proxy: its sockets must never be another proxy's.
        let workdir = self.run_dir.join(format!("{name}.{namespace}"));
        std::fs::create_dir_all(&workdir)?;
        // The agent reads its token from a file, as in a pod; only its user may read it.
        let token_file = workdir.join("token");
        fleetmesh_ca::files::write_private(&token_file, token.as_bytes())?;
        let meshd = MeshdConnection::new(
            &xds_address.to_string(),
            meshd_roots.as_deref(),
            TokenFile::new(&token_file),
        )?
        .in_cluster(&cluster_id);
        let security = Security::start(&meshd, spiffe_id.clone(), self.cert_ttl, &workdir)?;
        let options = StartOptions {
            envoy: self.envoy.clone(),
            workdir,
            bootstrap: BootstrapConfig {
                identity: WorkloadIdentity {
                    kind: kind.into(),
                    pod_name: name.into(),
                    namespace: namespace.into(),
                    ip: ip.to_string(),
                    other_ips: pod_ip.into_iter().collect(),
                    labels: labels.clone(),
                    service_account: identity.service_account.clone(),
                    cluster_id,
                    mesh_id: "cluster.local".into(),
                    interception_mode: "NONE".into(),
                    istio_version: env!("CARGO_PKG_VERSION").into(),
                },
                xds_mode: self.xds_mode,
                xds_socket: security.xds_socket().to_path_buf(),
                sds_socket: security.sds_socket().to_path_buf(),
            },
            log_level: "warning".into(),
            concurrency: 1,
            drain_time: Duration::from_secs(1),
        };
        let envoy = EnvoyProcess::start(options)?;
        tokio::task::block_in_place(|| envoy.wait_ready(ENVOY_READY_TIMEOUT))
            .map_err(anyhow::Error::msg)?;
        Ok(Workload {
            name: name.into(),
            ip,
            app: None,
            envoy,
            security,
            node_id: node_id(kind, ip, name, namespace),
            spiffe_id,
            token_file,
        })
    }
}

/// Local workloads run as the service account named by their `app` label.
fn service_account(labels: &BTreeMap<String, String>) -> String {
    labels
        .get("app")
        .cloned()
        .unwrap_or_else(|| "default".into())
}

fn node_id(kind: &str, ip: Ipv4Addr, name: &str, namespace: &str) -> String {
    format!("{kind}~{ip}~{name}.{namespace}~{namespace}.svc.cluster.local")
}

fn workload_yaml(
    spec: &WorkloadSpec,
    ip: Ipv4Addr,
    labels: &BTreeMap<String, String>,
    app: SocketAddr,
) -> String {
    let labels_yaml: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k:?}: {v:?}"))
        .collect();
    let labels_yaml = labels_yaml.join(", ");
    let locality = spec
        .locality
        .as_ref()
        .map(|l| format!(", locality: {l:?}"))
        .unwrap_or_default();
    format!(
        "# Workload {name}: its address, and where its sidecar finds the app.\n\
         apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: {name}, namespace: {ns}}}\n\
         spec: {{address: \"{ip}\", labels: {{{labels_yaml}}}, serviceAccount: {sa}{locality}}}\n---\n\
         apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: {name}, namespace: {ns}}}\n\
         spec:\n  workloadSelector: {{labels: {{\"{WORKLOAD_LABEL}\": {name}}}}}\n  \
         ingress: [{{port: {{number: {port}, protocol: HTTP, name: http}}, defaultEndpoint: \"{app}\"}}]\n",
        name = spec.name,
        ns = spec.namespace,
        sa = service_account(labels),
        port = spec.port,
    )
}

/// A loopback address of its own for a workload: 127.A.B.C with A from the process id, so
/// parallel test processes do not collide, and checked free on Istio's readiness port.
fn allocate_ip() -> anyhow::Result<Ipv4Addr> {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    let block = 20 + (std::process::id() % 200) as u8;
    for _ in 0..1000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let ip = Ipv4Addr::new(127, block, (n >> 8) as u8, (n & 0xff) as u8);
        if n & 0xff == 0 {
            continue;
        }
        if std::net::TcpListener::bind((ip, fleetmesh_agent::bootstrap::READINESS_PORT as u16))
            .is_ok()
        {
            return Ok(ip);
        }
    }
    anyhow::bail!("no free loopback address for a workload")
}
