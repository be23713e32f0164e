//! Helpers for the end-to-end suites, on top of [`fleetmesh_cli::local_mesh`]: the same
//! local mesh the demo runs (meshd, real Envoy sidecars, sample apps on loopback).

pub mod browser;
pub mod dashboards;
pub mod data_plane;
pub mod fleet;
pub mod istio_corpus;
pub mod istiod;
pub mod kube_eds;
pub mod load;
pub mod real_node;

pub use fleetmesh_agent::XdsMode;
pub use fleetmesh_cli::local_mesh::{LocalMesh, Workload, WorkloadSpec};
pub use fleetmesh_cli::sample_app::{SERVICE_HEADER, VERSION_HEADER};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The directory of the pinned `istio.io/istio` module (fetched on first use; see
/// `scripts/istio-source`): Istio's own CRDs, samples and dashboards, read where they
/// are, never copied into this repository.
pub fn istio_source() -> std::path::PathBuf {
    std::path::PathBuf::from(last_line_of_script("istio-source", &[]))
}

/// The directory of the `istio.io/api` module that the pinned `istio.io/istio` requires:
/// the API reference, whose `.proto` comments hold Istio's examples.
pub fn istio_api_source() -> std::path::PathBuf {
    std::path::PathBuf::from(last_line_of_script("istio-source", &["--api"]))
}

/// Where `scripts/istio-build` keeps istiod, istioctl and Istio's CRDs (building them on
/// first use).
pub fn istio_build() -> std::path::PathBuf {
    std::path::PathBuf::from(last_line_of_script("istio-build", &[]))
}

/// Runs `scripts/NAME ARGS`; the last line it printed (where it says its result is).
pub fn last_line_of_script(name: &str, args: &[&str]) -> String {
    let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts")
        .join(name);
    let output = std::process::Command::new(&script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(
        output.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout.lines().last().unwrap_or_default().trim().to_string()
}

/// Polls `check` until it returns `Some`, or fails after `timeout` naming `what`.
pub async fn eventually<T, F: AsyncFnMut() -> Option<T>>(
    what: &str,
    timeout: Duration,
    mut check: F,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A GET through `from`'s sidecar: (status, response headers' version, body).
pub async fn get(from: &Workload, url: &str) -> Result<(u16, String, String), String> {
    request(from, reqwest::Method::GET, url, &[]).await
}

pub async fn request(
    from: &Workload,
    method: reqwest::Method,
    url: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, String, String), String> {
    let mut builder = from.client().request(method, url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let response = builder.send().await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let version = response
        .headers()
        .get(VERSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = response.text().await.map_err(|e| e.to_string())?;
    Ok((status, version, body))
}

/// Sends `count` GETs and counts the answers by `version` (or `HTTP <status>` / `error`).
pub async fn split(from: &Workload, url: &str, count: usize) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for _ in 0..count {
        let key = match get(from, url).await {
            Ok((200, version, _)) => version,
            Ok((status, _, _)) => format!("HTTP {status}"),
            Err(_) => "error".to_string(),
        };
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}

/// Waits until `url` answers `status` through `from`'s sidecar; returns how long it took.
pub async fn wait_for_status(from: &Workload, url: &str, status: u16) -> Duration {
    let start = Instant::now();
    eventually(
        &format!("{url} to answer {status}"),
        Duration::from_secs(30),
        async || matches!(get(from, url).await, Ok((s, _, _)) if s == status).then_some(()),
    )
    .await;
    start.elapsed()
}

/// The serial numbers of the certificates Envoy is using now (its admin `/certs`),
/// lowercase hex without leading zeros.
pub fn envoy_certificate_serials(workload: &Workload) -> Vec<String> {
    let Ok((_, body)) =
        fleetmesh_agent::process::admin_request(workload.envoy.admin_socket(), "GET", "/certs")
    else {
        return Vec::new();
    };
    let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    json["certificates"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["cert_chain"].as_array().into_iter().flatten())
        .filter_map(|c| c["serial_number"].as_str())
        .map(|s| s.trim_start_matches('0').to_ascii_lowercase())
        .collect()
}

/// The serial number of a PEM certificate, in Envoy's format.
pub fn serial_of(pem_text: &str) -> String {
    use x509_parser::prelude::*;
    let (_, block) = parse_x509_pem(pem_text.as_bytes()).expect("a PEM certificate");
    let (_, cert) = X509Certificate::from_der(&block.contents).expect("a certificate");
    cert.raw_serial()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
        .trim_start_matches('0')
        .to_string()
}

/// `fleetmesh install` of `plan` into `cluster` against `meshd`, writing into `output`;
/// no registration unless the caller sets it.
pub fn install_options(
    plan: fleetmesh_cli::install::manifests::Plan,
    cluster: &fleetmesh_kube::testing::TestCluster,
    meshd: &fleetmesh_meshd::Meshd,
    output: &std::path::Path,
) -> fleetmesh_cli::install::InstallOptions {
    fleetmesh_cli::install::InstallOptions {
        plan,
        output_dir: output.to_path_buf(),
        verbose: false,
        register: false,
        kubeconfig: Some(cluster.kubeconfig.clone()),
        context: None,
        meshd_url: format!("http://{}", meshd.http_address()),
        admin_token_file: meshd.admin_token_file().to_path_buf(),
        take_default_tag: false,
    }
}

/// Envoy's `/clusters` of `proxy`: its CDS clusters and their endpoints, by name
/// (empty if Envoy does not answer).
pub fn envoy_clusters(proxy: &Workload) -> String {
    fleetmesh_agent::process::admin_request(proxy.envoy.admin_socket(), "GET", "/clusters")
        .map(|(_, body)| body)
        .unwrap_or_default()
}

/// The route configs `proxy`'s Envoy got by RDS, as its config dump shows them.
pub fn envoy_route_configs(proxy: &Workload) -> Vec<serde_json::Value> {
    let admin = proxy.envoy.admin_socket();
    let path = "/config_dump?resource=dynamic_route_configs";
    let (_, body) =
        fleetmesh_agent::process::admin_request(admin, "GET", path).expect("Envoy answers");
    let dump: serde_json::Value = serde_json::from_str(&body).expect("a config dump");
    dump["configs"].as_array().cloned().unwrap_or_default()
}

/// The names of the virtual hosts `proxy`'s Envoy holds: its route configs' (with those
/// VHDS brought, for a sidecar that fetches them on demand).
pub fn envoy_virtual_hosts(proxy: &Workload) -> Vec<String> {
    envoy_route_configs(proxy)
        .iter()
        .flat_map(|c| c["route_config"]["virtual_hosts"].as_array().cloned())
        .flatten()
        .filter_map(|h| h["name"].as_str().map(str::to_string))
        .collect()
}

/// The counter `name` of `proxy`'s Envoy (its admin `/stats`), if Envoy has it.
pub fn envoy_stat(proxy: &Workload, name: &str) -> Option<u64> {
    let (_, body) =
        fleetmesh_agent::process::admin_request(proxy.envoy.admin_socket(), "GET", "/stats")
            .ok()?;
    let wanted = format!("{name}: ");
    body.lines()
        .find_map(|line| line.strip_prefix(&wanted)?.trim().parse().ok())
}

/// The SPIFFE id (URI SAN) of a PEM certificate.
pub fn spiffe_id_of(pem_text: &str) -> Option<String> {
    use x509_parser::prelude::*;
    let (_, block) = parse_x509_pem(pem_text.as_bytes()).ok()?;
    let (_, cert) = X509Certificate::from_der(&block.contents).ok()?;
    let names = cert.subject_alternative_name().ok()??;
    names
        .value
        .general_names
        .iter()
        .find_map(|name| match name {
            GeneralName::URI(uri) => Some(uri.to_string()),
            _ => None,
        })
}

/// meshd's NACK counter (`pilot_total_xds_rejects`, all types).
pub fn nacks(mesh: &LocalMesh) -> u64 {
    mesh.meshd().metrics().rejects_total()
}

/// The standard little mesh most suites use: Services `reviews` (v1, v2) and `ratings`
/// on port 9080, a DestinationRule with subsets v1/v2, and a `frontend` client.
pub struct Bookstore {
    pub mesh: LocalMesh,
    pub frontend: Workload,
    pub reviews_v1: Workload,
    pub reviews_v2: Workload,
    pub ratings: Workload,
}

pub const BOOKSTORE_SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: ratings}
spec: {selector: {app: ratings}, ports: [{name: http, port: 9080}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
"#;

impl Bookstore {
    pub async fn start(mode: XdsMode) -> Bookstore {
        Bookstore::start_on(LocalMesh::start(None, mode).await.expect("meshd starts")).await
    }

    /// The bookstore on a mesh the caller set up (a short certificate lifetime, say).
    pub async fn start_on(mesh: LocalMesh) -> Bookstore {
        mesh.write("services.yaml", BOOKSTORE_SERVICES).unwrap();
        let start = |name: &str, labels: &[(&str, &str)]| {
            mesh.add_workload(WorkloadSpec::new(name, labels, 9080))
        };
        let frontend = start("frontend", &[("app", "frontend")])
            .await
            .expect("frontend starts");
        let reviews_v1 = start("reviews-v1", &[("app", "reviews"), ("version", "v1")])
            .await
            .expect("reviews-v1 starts");
        let reviews_v2 = start("reviews-v2", &[("app", "reviews"), ("version", "v2")])
            .await
            .expect("reviews-v2 starts");
        let ratings = start("ratings", &[("app", "ratings")])
            .await
            .expect("ratings starts");
        let store = Bookstore {
            mesh,
            frontend,
            reviews_v1,
            reviews_v2,
            ratings,
        };
        // Every sidecar has the services once reviews answers through the frontend.
        wait_for_status(&store.frontend, "http://reviews:9080/", 200).await;
        wait_for_status(&store.frontend, "http://ratings:9080/", 200).await;
        store
    }

    /// Applies a VirtualService (or any YAML) as `file`, and waits until `probe` (a URL
    /// through the frontend) answers `status`; returns the propagation time.
    pub async fn apply(&self, file: &str, yaml: &str, probe: &str, status: u16) -> Duration {
        self.mesh.write(file, yaml).unwrap();
        wait_for_status(&self.frontend, probe, status).await
    }
}

/// Requests sent in a loop through a workload's sidecar, counting what failed.
pub struct Traffic {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<TrafficReport>,
}

#[derive(Debug, Default, Clone)]
pub struct TrafficReport {
    pub sent: usize,
    /// Each failure: the response status or error.
    pub failures: Vec<String>,
    pub versions: BTreeMap<String, usize>,
}

impl Traffic {
    /// Starts sending GET `url` through `from`'s sidecar, one request after another.
    pub fn start(from: &Workload, url: &str) -> Traffic {
        let client = from.client();
        let url = url.to_string();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut report = TrafficReport::default();
            // Bounded: at most 10 minutes of traffic even if never stopped.
            let deadline = Instant::now() + Duration::from_secs(600);
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
                report.sent += 1;
                match client.get(&url).send().await {
                    Ok(r) if r.status().is_success() => {
                        let version = r
                            .headers()
                            .get(VERSION_HEADER)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("");
                        *report.versions.entry(version.to_string()).or_insert(0) += 1;
                    }
                    Ok(r) => report.failures.push(format!("HTTP {}", r.status())),
                    Err(e) => report.failures.push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            report
        });
        Traffic { stop, task }
    }

    pub async fn stop(self) -> TrafficReport {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.task.await.expect("traffic task")
    }
}

/// meshd's `/debug/syncz` entry for `proxy_id`, once it is connected.
pub async fn syncz(mesh: &LocalMesh, proxy_id: &str) -> Option<serde_json::Value> {
    syncz_at(mesh.meshd().http_address(), proxy_id).await
}

/// The `/debug/syncz` entry for `proxy_id` of the meshd serving HTTP at `http`.
pub async fn syncz_at(http: std::net::SocketAddr, proxy_id: &str) -> Option<serde_json::Value> {
    let url = format!("http://{http}/debug/syncz");
    let text = reqwest::get(url).await.ok()?.text().await.ok()?;
    let all: serde_json::Value = serde_json::from_str(&text).ok()?;
    all.as_array()?
        .iter()
        .find(|p| p["proxy"] == proxy_id)
        .cloned()
}

/// The versions `proxy_id` has ACKed of clusters, endpoints, listeners and routes (in
/// that order) at the meshd serving HTTP at `http`, once it has ACKed all it was sent.
pub async fn acked_versions(http: std::net::SocketAddr, proxy_id: &str) -> Vec<String> {
    const TYPES: [&str; 4] = ["cluster", "endpoint", "listener", "route"];
    eventually(
        "the proxy to be connected and in sync",
        Duration::from_secs(30),
        async || {
            let status = syncz_at(http, proxy_id).await?;
            let of = |suffix: &str| -> Vec<String> {
                TYPES
                    .iter()
                    .map(|t| {
                        let version = &status[format!("{t}_{suffix}")];
                        version.as_str().unwrap_or("").to_string()
                    })
                    .collect()
            };
            let (acked, sent) = (of("acked"), of("sent"));
            (acked == sent && acked.iter().all(|v| !v.is_empty())).then_some(acked)
        },
    )
    .await
}

/// Certificates for TLS tests: a CA, a server certificate for shop.example.com
/// (`tls.crt`, `tls.key`, beside `ca.crt` in a directory), and a client certificate
/// (`client.crt`, `client.key`), all from the same CA.
pub struct Pki {
    dir: tempfile::TempDir,
    ca: rcgen::Certificate,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    client: (String, String),
}

/// The client certificate's serial number, which a revocation list names.
const CLIENT_SERIAL: u64 = 0x1001;

impl Pki {
    pub fn generate() -> Pki {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        // Distinct names: a leaf named like its issuer would look self-signed.
        ca_params.distinguished_name = rcgen::DistinguishedName::new();
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "fleetmesh test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf = |name: &str, serial: u64| {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
            params.serial_number = Some(serial.into());
            params.distinguished_name = rcgen::DistinguishedName::new();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            let cert = params.signed_by(&key, &issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let dir = tempfile::tempdir().unwrap();
        let (server_cert, server_key) = leaf("shop.example.com", 0x1000);
        std::fs::write(dir.path().join("tls.crt"), server_cert).unwrap();
        std::fs::write(dir.path().join("tls.key"), server_key).unwrap();
        std::fs::write(dir.path().join("ca.crt"), ca.pem()).unwrap();
        let client = leaf("client.example.com", CLIENT_SERIAL);
        std::fs::write(dir.path().join("client.crt"), &client.0).unwrap();
        std::fs::write(dir.path().join("client.key"), &client.1).unwrap();
        Pki {
            dir,
            ca,
            issuer,
            client,
        }
    }

    /// Writes to `path` a revocation list of the CA (PEM) that revokes the client
    /// certificate when `revoke_client`, and nothing otherwise.
    pub fn write_crl(&self, path: &std::path::Path, revoke_client: bool) {
        let long_ago = rcgen::date_time_ymd(2024, 1, 1);
        let revoked = revoke_client.then(|| rcgen::RevokedCertParams {
            serial_number: CLIENT_SERIAL.into(),
            revocation_time: long_ago,
            reason_code: Some(rcgen::RevocationReason::KeyCompromise),
            invalidity_date: None,
        });
        let crl = rcgen::CertificateRevocationListParams {
            this_update: long_ago,
            next_update: rcgen::date_time_ymd(2100, 1, 1),
            crl_number: u64::from(revoke_client).into(),
            issuing_distribution_point: None,
            revoked_certs: revoked.into_iter().collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&self.issuer)
        .unwrap();
        // Replaced whole, as a proxy's agent may read it at any moment.
        let partial = path.with_extension("partial");
        std::fs::write(&partial, crl.pem().unwrap()).unwrap();
        std::fs::rename(&partial, path).unwrap();
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// A client that trusts the CA and reaches shop.example.com at `address`.
    pub fn client(&self, address: std::net::SocketAddr, with_certificate: bool) -> reqwest::Client {
        self.client_builder(address, with_certificate)
            .build()
            .unwrap()
    }

    /// [`Pki::client`] speaking TLS 1.2 at most.
    pub fn tls12_client(&self, address: std::net::SocketAddr) -> reqwest::Client {
        self.client_builder(address, false)
            .max_tls_version(reqwest::tls::Version::TLS_1_2)
            .build()
            .unwrap()
    }

    fn client_builder(
        &self,
        address: std::net::SocketAddr,
        with_certificate: bool,
    ) -> reqwest::ClientBuilder {
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(self.ca.pem().as_bytes()).unwrap())
            .resolve("shop.example.com", address)
            .timeout(Duration::from_secs(10));
        if with_certificate {
            let pem = format!("{}{}", self.client.0, self.client.1);
            builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
        }
        builder
    }
}

/// The issuer ([`JwtIssuer`]) of the tokens of the JWT tests.
pub const ISSUER: &str = "https://issuer.fleetmesh.test";

/// Signs JWTs (ES256) for [`ISSUER`] with a key of its own, published as a JWKS.
pub struct JwtIssuer {
    key: EcdsaKeyPair,
    rng: ring::rand::SystemRandom,
}

impl JwtIssuer {
    pub fn generate() -> JwtIssuer {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        JwtIssuer { key, rng }
    }

    /// The public key as a JWKS document.
    pub fn jwks(&self) -> String {
        // An uncompressed point: 0x04, then x and y.
        let point = self.key.public_key().as_ref();
        serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": "test",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        }]})
        .to_string()
    }

    /// A token for `subject` with claim `groups`, valid for an hour.
    pub fn token(&self, subject: &str, groups: &[&str]) -> String {
        self.token_with(subject, serde_json::json!({"groups": groups}))
    }

    /// A token for `subject` with the claims of JSON object `claims`, valid for an hour.
    pub fn token_with(&self, subject: &str, mut claims: serde_json::Value) -> String {
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 3600;
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256","typ":"JWT","kid":"test"}"#);
        claims["iss"] = ISSUER.into();
        claims["sub"] = subject.into();
        claims["exp"] = exp.into();
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signed = format!("{header}.{payload}");
        let signature = self.key.sign(&self.rng, signed.as_bytes()).unwrap();
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    }
}

/// What [`tls_backend`] answers.
pub const BACKEND_ANSWER: &str = "answered behind TLS";

/// An HTTPS server on loopback with the Pki's shop.example.com certificate, answering
/// every request with [`BACKEND_ANSWER`]; with `client_auth`, only to clients with a
/// certificate from the Pki's CA.
pub async fn tls_backend(pki: &Pki, client_auth: bool) -> std::net::SocketAddr {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let chain = CertificateDer::pem_file_iter(pki.path("tls.crt"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(pki.path("tls.key")).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = if client_auth {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(pki.path("ca.crt")).unwrap())
            .unwrap();
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                .build()
                .unwrap();
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let config = builder.with_single_cert(chain, key).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                // The request's head, then one answer and close.
                let mut request = Vec::new();
                let mut buffer = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buffer[..n]),
                    }
                }
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{BACKEND_ANSWER}",
                    BACKEND_ANSWER.len()
                );
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    address
}
