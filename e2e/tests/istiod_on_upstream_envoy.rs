//! Which of istiod's settings let upstream Envoy take its config. The proxies of an istiod
//! that fleetmesh replaces run Istio's own Envoy build; these suites have upstream Envoy
//! only. istiod as Istio's chart configures it (MeshConfig `defaultProviders.metrics:
//! [prometheus]`) sends filters only Istio's build has (metadata exchange on clusters,
//! its ALPN override and stats filter on listeners), and upstream Envoy rejects clusters
//! and listeners; `PILOT_ENABLE_ALPN_FILTER=false` and
//! `PILOT_ENABLE_METADATA_EXCHANGE=false` leave the stats filter; with a MeshConfig
//! naming no metrics provider as well, upstream Envoy accepts everything istiod sends.
//! (istiod from `scripts/istio-build`; its Envoy a sidecar of a kwok pod, given config
//! only: no traffic, no pod IP contacted; its secrets from this test's CA.)

use fleetmesh_agent::certificate::WorkloadCertificate;
use fleetmesh_agent::sds::SdsServer;
use fleetmesh_ca::{CertificateAuthority, Identity};
use fleetmesh_e2e::istiod::{Istiod, free_address, install_istio, installation};
use fleetmesh_e2e::kube_eds::deploy_reviews;
use fleetmesh_kube::testing::{TestCluster, TestNamespace};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

/// istiod's environment variables.
type Settings<'a> = &'a [(&'a str, &'a str)];

/// The settings that keep istiod's config to upstream Envoy's extensions.
const UPSTREAM_ENVOY: [(&str, &str); 2] = [
    ("PILOT_ENABLE_ALPN_FILTER", "false"),
    ("PILOT_ENABLE_METADATA_EXCHANGE", "false"),
];

/// MeshConfig as Istio's chart writes it (telemetry on: the `prometheus` provider, whose
/// stats filter is Istio's build's own).
const CHART_METRICS: &str = "    defaultProviders: {metrics: [prometheus]}\n";

/// MeshConfig naming no metrics provider.
const NO_METRICS_PROVIDER: &str = "    defaultProviders: {metrics: []}\n";

/// Upstream Envoy as a sidecar of pod `pod` (app `reviews`) of `namespace`, with the node
/// id and metadata Istio's agent gives it, its ADS stream to istiod's plaintext port, and
/// its secrets (`default`, `ROOTCA`) from `dir/sds.sock`, which serves them as Istio's
/// agent does (else its clusters would wait for them, and it would never ask for
/// listeners). Its bootstrap and log are in `dir`.
fn envoy_on(istiod: &Istiod, namespace: &str, pod: &str, admin: SocketAddr, dir: &Path) -> Child {
    let envoy = fleetmesh_agent::envoy::locate(None).expect("Envoy is installed");
    let bootstrap = format!(
        r#"
node:
  id: sidecar~10.255.0.1~{pod}.{namespace}~{namespace}.svc.cluster.local
  cluster: reviews.{namespace}
  metadata:
    ISTIO_VERSION: "{version}"
    NAMESPACE: {namespace}
    SERVICE_ACCOUNT: default
    CLUSTER_ID: Kubernetes
    INSTANCE_IPS: 10.255.0.1
    INTERCEPTION_MODE: REDIRECT
    LABELS: {{app: reviews}}
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin_port}}}}}
dynamic_resources:
  ads_config:
    api_type: GRPC
    transport_api_version: V3
    grpc_services: [{{envoy_grpc: {{cluster_name: xds-grpc}}}}]
  cds_config: {{ads: {{}}, resource_api_version: V3, initial_fetch_timeout: 0s}}
  lds_config: {{ads: {{}}, resource_api_version: V3, initial_fetch_timeout: 0s}}
static_resources:
  clusters:
  - name: xds-grpc
    type: STATIC
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}
    load_assignment:
      cluster_name: xds-grpc
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {xds_port}}}}}}}}}]}}]
  - name: sds-grpc
    type: STATIC
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}
    load_assignment:
      cluster_name: sds-grpc
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{pipe: {{path: {sds}}}}}}}}}]}}]
"#,
        version = istiod.version,
        admin_port = admin.port(),
        xds_port = istiod.xds.port(),
        sds = dir.join("sds.sock").display(),
    );
    let config = dir.join("bootstrap.yaml");
    std::fs::write(&config, bootstrap).unwrap();
    Command::new(envoy)
        .arg("-c")
        .arg(&config)
        .args(["--disable-hot-restart", "-l", "warning"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("envoy.log")).unwrap())
        .spawn()
        .expect("Envoy starts")
}

/// The certificate of `namespace`'s `default` service account from `ca`, as Istio's agent
/// would hold it (for as long as the sender is kept).
fn workload_certificate(
    ca: &CertificateAuthority,
    namespace: &str,
) -> tokio::sync::watch::Sender<Option<Arc<WorkloadCertificate>>> {
    let identity = Identity::new(namespace, "default");
    let csr = fleetmesh_ca::csr::generate(&identity.spiffe_id("cluster.local")).unwrap();
    let chain = ca
        .sign(&csr.csr_pem, &identity, Some(Duration::from_secs(3600)))
        .unwrap();
    let (roots, certificates) = chain.split_last().unwrap();
    let certificate = WorkloadCertificate {
        chain: certificates.concat(),
        key: csr.key_pem,
        roots: roots.clone(),
        not_after: std::time::SystemTime::now() + Duration::from_secs(3600),
    };
    tokio::sync::watch::Sender::new(Some(Arc::new(certificate)))
}

/// Envoy's LDS and CDS updates, accepted and rejected, once it has had both.
async fn lds_and_cds(admin: SocketAddr) -> [(u64, u64); 2] {
    let stat = |text: &str, name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: "))?.parse().ok())
            .unwrap_or(0)
    };
    fleetmesh_e2e::eventually(
        "Envoy's first listeners and clusters from istiod",
        Duration::from_secs(60),
        async || {
            let text = reqwest::get(format!("http://{admin}/stats"))
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            let of = |api: &str| {
                (
                    stat(&text, &format!("{api}.update_success")),
                    stat(&text, &format!("{api}.update_rejected")),
                )
            };
            let (lds, cds) = (of("listener_manager.lds"), of("cluster_manager.cds"));
            (lds.0 + lds.1 > 0 && cds.0 + cds.1 > 0).then_some([lds, cds])
        },
    )
    .await
}

/// Envoy's LDS and CDS outcomes with istiod run with `settings` and `mesh_extra` added to
/// its MeshConfig.
async fn upstream_envoy_on_istiod(
    cluster: &TestCluster,
    namespace: &TestNamespace,
    settings: Settings<'_>,
    mesh_extra: &str,
) -> [(u64, u64); 2] {
    let mesh = installation(None).replace(
        "    accessLogFile: /dev/stdout\n",
        &format!("    accessLogFile: /dev/stdout\n{mesh_extra}"),
    );
    install_istio(cluster, &mesh);
    let dir = tempfile::tempdir().unwrap();
    let cacerts = dir.path().join("cacerts");
    let ca =
        CertificateAuthority::load_or_create(&cacerts, "cluster.local", Duration::from_secs(3600))
            .expect("a plug-in CA for istiod");
    let istiod = Istiod::start_with(cluster, dir.path(), &cacerts, settings).await;
    let sds = dir.path().join("sds.sock");
    let certificate = workload_certificate(&ca, &namespace.name);
    let _sds = SdsServer::new(certificate.subscribe())
        .serve(&sds)
        .expect("the secrets' socket");
    let admin = free_address();
    let mut envoy = envoy_on(&istiod, &namespace.name, "reviews-0", admin, dir.path());
    let outcome = lds_and_cds(admin).await;
    let _ = envoy.kill();
    let _ = envoy.wait();
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_envoy_takes_istiods_config_with_these_settings() {
    let cluster = TestCluster::start("fleetmesh-istiod-envoy").expect("the local cluster starts");
    let client = cluster.client().await.unwrap();
    let namespace = TestNamespace::create(&client, "istiod-envoy")
        .await
        .unwrap();
    deploy_reviews(&namespace, 1).await;

    // (istiod's settings, its MeshConfig, whether upstream Envoy takes it all)
    let cases: [(Settings, &str, bool); 3] = [
        (&[], CHART_METRICS, false),
        (&UPSTREAM_ENVOY, CHART_METRICS, false),
        (&UPSTREAM_ENVOY, NO_METRICS_PROVIDER, true),
    ];
    for (settings, mesh, taken) in cases {
        let [lds, cds] = upstream_envoy_on_istiod(&cluster, &namespace, settings, mesh).await;
        println!(
            "istiod with {settings:?} and {}: LDS (accepted, rejected) {lds:?}, CDS {cds:?}",
            mesh.trim()
        );
        if taken {
            assert_eq!((lds.1, cds.1), (0, 0), "nothing rejected");
            assert!(lds.0 > 0 && cds.0 > 0);
        } else {
            assert!(lds.1 + cds.1 > 0, "upstream Envoy rejects some of it");
        }
    }
    namespace.delete().await.ok();
}
