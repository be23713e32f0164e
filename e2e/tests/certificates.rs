//! Workload certificates over time, with real Envoy and STRICT mTLS under steady traffic:
//! renewal (several times), a meshd restart (the root is kept), and a full root rotation,
//! each with no failed request. And the CA's API: only the caller's own identity.

use fleetmesh_ca::{Identity, TokenIssuer, csr};
use fleetmesh_e2e::*;
use std::time::{Duration, SystemTime};

const HOUR: Duration = Duration::from_secs(3600);

const STRICT: &str = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
    metadata: {name: default, namespace: istio-system}\nspec: {mtls: {mode: STRICT}}\n";

async fn strict_bookstore(ttl: Duration) -> Bookstore {
    let mut mesh = LocalMesh::start(None, XdsMode::Delta)
        .await
        .expect("meshd starts");
    mesh.cert_ttl = ttl;
    mesh.write("strict.yaml", STRICT).unwrap();
    Bookstore::start_on(mesh).await
}

fn workloads(store: &Bookstore) -> [&Workload; 4] {
    [
        &store.frontend,
        &store.reviews_v1,
        &store.reviews_v2,
        &store.ratings,
    ]
}

fn not_after(workload: &Workload) -> SystemTime {
    workload
        .security
        .current()
        .expect("a certificate")
        .not_after
}

fn roots(workload: &Workload) -> String {
    workload
        .security
        .current()
        .expect("a certificate")
        .roots
        .clone()
}

fn root_count(workload: &Workload) -> usize {
    roots(workload).matches("BEGIN CERTIFICATE").count()
}

/// Waits until every workload has been issued `times` new certificates, and Envoy uses
/// the newest.
async fn renewed(store: &Bookstore, times: usize, timeout: Duration) {
    let mut seen: Vec<Vec<SystemTime>> = workloads(store)
        .iter()
        .map(|w| vec![not_after(w)])
        .collect();
    eventually(
        &format!("{times} renewals of every certificate"),
        timeout,
        async || {
            for (workload, history) in workloads(store).iter().zip(seen.iter_mut()) {
                let current = not_after(workload);
                if history.last() != Some(&current) {
                    history.push(current);
                }
            }
            seen.iter().all(|h| h.len() > times).then_some(())
        },
    )
    .await;
    eventually("Envoy to use the newest certificate", timeout, async || {
        workloads(store)
            .iter()
            .all(|w| {
                let newest = serial_of(&w.security.current().unwrap().chain);
                envoy_certificate_serials(w).contains(&newest)
            })
            .then_some(())
    })
    .await;
}

fn start_traffic(store: &Bookstore) -> [Traffic; 2] {
    [
        Traffic::start(&store.frontend, "http://reviews:9080/"),
        Traffic::start(&store.frontend, "http://ratings:9080/"),
    ]
}

async fn assert_no_failures(traffic: [Traffic; 2]) {
    for flow in traffic {
        let report = flow.stop().await;
        assert!(report.sent > 100, "traffic flowed: {report:?}");
        assert!(
            report.failures.is_empty(),
            "{} of {} requests failed: {:?}",
            report.failures.len(),
            report.sent,
            &report.failures[..report.failures.len().min(5)]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_renew_and_a_meshd_restart_keeps_the_root() {
    let mut store = strict_bookstore(Duration::from_secs(20)).await;
    let root = roots(&store.frontend);
    let traffic = start_traffic(&store);

    // Renewed at half the lifetime: two renewals in about 20 s.
    renewed(&store, 2, Duration::from_secs(60)).await;

    store.mesh.restart_meshd().await.expect("meshd restarts");
    renewed(&store, 1, Duration::from_secs(60)).await;
    for workload in workloads(&store) {
        assert_eq!(roots(workload), root, "{} kept its trust", workload.name);
    }
    assert_no_failures(traffic).await;
    assert_eq!(nacks(&store.mesh), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_root_rotates_under_traffic() {
    use fleetmesh_ca::rotation;
    let store = strict_bookstore(Duration::from_secs(10)).await;
    let ca_dir = store.mesh.config_dir().join(".ca");
    let traffic = start_traffic(&store);

    // 1. Trust both roots; wait until every workload has the two-root bundle.
    rotation::add_root(&ca_dir, "cluster.local").unwrap();
    eventually(
        "every workload to trust both roots",
        Duration::from_secs(60),
        async || {
            workloads(&store)
                .iter()
                .all(|w| root_count(w) == 2)
                .then_some(())
        },
    )
    .await;
    renewed(&store, 1, Duration::from_secs(60)).await;

    // 2. Sign with the new root; wait for a full lifetime of renewals.
    rotation::activate_root(&ca_dir).unwrap();
    renewed(&store, 2, Duration::from_secs(60)).await;

    // 3. Trust only the new root.
    let new_root = std::fs::read_to_string(ca_dir.join("ca-cert.pem")).unwrap();
    rotation::retire_roots(&ca_dir).unwrap();
    eventually(
        "every workload to trust the new root only",
        Duration::from_secs(60),
        async || {
            workloads(&store)
                .iter()
                .all(|w| roots(w).trim_end() == new_root.trim_end())
                .then_some(())
        },
    )
    .await;
    renewed(&store, 1, Duration::from_secs(60)).await;

    assert_no_failures(traffic).await;
    assert_eq!(nacks(&store.mesh), 0);
}

#[tokio::test]
async fn the_ca_signs_only_the_callers_own_identity() {
    let mesh = LocalMesh::start(None, XdsMode::Delta).await.unwrap();
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", mesh.meshd().xds_address()))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let frontend = Identity::new("default", "frontend");
    let token = mesh.meshd().issue_token(&frontend, HOUR).token;
    let own = csr::generate(&frontend.spiffe_id("cluster.local")).unwrap();
    let create = async |token: &str, csr: String, ttl: u64| {
        fleetmesh_ca::client::create_certificate(
            channel.clone(),
            token,
            None,
            csr,
            Duration::from_secs(ttl),
        )
        .await
    };

    let chain = create(&token, own.csr_pem.clone(), 3600).await.unwrap();
    assert!(chain.len() >= 2, "certificate and trust bundle");

    let foreign = csr::generate("spiffe://cluster.local/ns/default/sa/reviews").unwrap();
    let refused = create(&token, foreign.csr_pem, 3600).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");

    // A token from another mesh's key, and no token at all.
    let stranger_dir = tempfile::tempdir().unwrap();
    let stranger = TokenIssuer::load_or_create(stranger_dir.path())
        .unwrap()
        .issue(&frontend, HOUR)
        .token;
    let unknown = create(&stranger, own.csr_pem.clone(), 3600)
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::Unauthenticated);
    // An expired token, and a revoked one, prove nothing any more.
    let expired = mesh.meshd().issue_token(&frontend, Duration::ZERO);
    let refused = create(&expired.token, own.csr_pem.clone(), 3600)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    assert!(refused.message().contains("expired"), "{refused:?}");
    let revoked = mesh.meshd().issue_token(&frontend, HOUR);
    create(&revoked.token, own.csr_pem.clone(), 3600)
        .await
        .unwrap();
    mesh.meshd().revoke_token(&revoked.id).unwrap();
    let refused = create(&revoked.token, own.csr_pem.clone(), 3600)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    assert!(refused.message().contains("revoked"), "{refused:?}");
    create(&token, own.csr_pem.clone(), 3600)
        .await
        .expect("the workload's other token still works");
    let anonymous =
        fleetmesh_ca::proto::istio_certificate_service_client::IstioCertificateServiceClient::new(
            channel.clone(),
        )
        .create_certificate(fleetmesh_ca::proto::IstioCertificateRequest {
            csr: own.csr_pem.clone(),
            validity_duration: 3600,
            metadata: None,
        })
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), tonic::Code::Unauthenticated);

    for (csr, what) in [
        ("garbage".to_string(), "not PEM"),
        (
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n".into(),
            "bad DER",
        ),
        ("A".repeat(100_000), "oversized"),
    ] {
        let error = create(&token, csr, 3600).await.unwrap_err();
        assert_eq!(
            error.code(),
            tonic::Code::InvalidArgument,
            "{what}: {error:?}"
        );
    }
    let too_long = create(&token, own.csr_pem, 365 * 24 * 3600)
        .await
        .unwrap_err();
    assert_eq!(too_long.code(), tonic::Code::InvalidArgument);
    assert!(
        too_long.message().contains("exceeds the maximum"),
        "{too_long:?}"
    );
}
