//! The CA signs what a caller may have and nothing else, keeps its root across restarts,
//! and accepts an existing Istio mesh's plug-in certs.

use fleetmesh_ca::authority::{CA_CERT, CA_KEY, CERT_CHAIN, ROOT_CERT};
use fleetmesh_ca::{CertificateAuthority, Identity, SignError, csr};
use std::time::Duration;
use x509_parser::prelude::*;

const DAY: Duration = Duration::from_secs(24 * 3600);

fn load(dir: &std::path::Path) -> CertificateAuthority {
    CertificateAuthority::load_or_create(dir, "cluster.local", 7 * DAY).unwrap()
}

fn uri_sans(pem_text: &str) -> Vec<String> {
    let block = ::pem::parse(pem_text).unwrap();
    let (_, cert) = X509Certificate::from_der(block.contents()).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    san.value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::URI(u) => u.to_string(),
            other => format!("{other:?}"),
        })
        .collect()
}

fn lifetime(pem_text: &str) -> Duration {
    let block = ::pem::parse(pem_text).unwrap();
    let (_, cert) = X509Certificate::from_der(block.contents()).unwrap();
    let v = cert.validity();
    Duration::from_secs((v.not_after.timestamp() - v.not_before.timestamp()) as u64)
}

#[test]
fn signs_the_callers_own_identity_with_one_spiffe_san() {
    let dir = tempfile::tempdir().unwrap();
    let ca = load(dir.path());
    let me = Identity::new("bookinfo", "reviews");
    let request = csr::generate(&me.spiffe_id("cluster.local")).unwrap();
    let chain = ca
        .sign(&request.csr_pem, &me, Some(Duration::from_secs(600)))
        .unwrap();
    assert_eq!(chain.len(), 2, "workload cert, then the trust bundle");
    assert_eq!(
        uri_sans(&chain[0]),
        ["spiffe://cluster.local/ns/bookinfo/sa/reviews"]
    );
    // 600 s plus the 60 s backdate.
    assert_eq!(lifetime(&chain[0]), Duration::from_secs(660));
    assert_eq!(chain[1], ca.roots());

    let default = ca.sign(&request.csr_pem, &me, None).unwrap();
    assert_eq!(lifetime(&default[0]), DAY + Duration::from_secs(60));
}

#[test]
fn refuses_another_identity_and_bad_requests() {
    let dir = tempfile::tempdir().unwrap();
    let ca = load(dir.path());
    let me = Identity::new("bookinfo", "reviews");
    let foreign = csr::generate("spiffe://cluster.local/ns/bookinfo/sa/ratings").unwrap();
    let error = ca.sign(&foreign.csr_pem, &me, None).unwrap_err();
    assert_eq!(
        error,
        SignError::ForeignIdentity {
            requested: "spiffe://cluster.local/ns/bookinfo/sa/ratings".into(),
            caller: "spiffe://cluster.local/ns/bookinfo/sa/reviews".into(),
        }
    );
    assert_eq!(
        tonic::Status::from(error).code(),
        tonic::Code::PermissionDenied
    );

    let own = csr::generate(&me.spiffe_id("cluster.local")).unwrap();
    assert!(matches!(
        ca.sign(&own.csr_pem, &me, Some(8 * DAY)),
        Err(SignError::TtlTooLong { .. })
    ));
    for bad in [
        String::new(),
        "not pem".to_string(),
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n".into(),
        // A valid PEM wrapper around a truncated request.
        own.csr_pem.replacen("MI", "MA", 1),
    ] {
        assert!(
            matches!(ca.sign(&bad, &me, None), Err(SignError::Malformed(_))),
            "{bad:?}"
        );
    }
    let huge = "A".repeat(70_000);
    assert_eq!(ca.sign(&huge, &me, None), Err(SignError::TooLarge(70_000)));
}

#[test]
fn the_root_survives_a_restart_and_its_key_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let first = load(dir.path()).roots().to_string();
    let second = load(dir.path()).roots().to_string();
    assert_eq!(first, second);
    let mode = std::fs::metadata(dir.path().join(CA_KEY))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn plug_in_certs_sign_through_their_intermediate() {
    // An existing mesh's layout: a root, and an intermediate that signs workloads.
    let root_key = rcgen::KeyPair::generate().unwrap();
    let mut root_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    root_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let root = root_params.self_signed(&root_key).unwrap();
    let root_issuer = rcgen::Issuer::new(root_params, &root_key);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.signed_by(&ca_key, &root_issuer).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let write = |name, text: String| std::fs::write(dir.path().join(name), text).unwrap();
    write(CA_CERT, ca_cert.pem());
    write(CA_KEY, ca_key.serialize_pem());
    write(CERT_CHAIN, ca_cert.pem() + &root.pem());
    write(ROOT_CERT, root.pem());

    let ca = load(dir.path());
    assert_eq!(ca.roots(), root.pem(), "the existing root is kept");
    let me = Identity::new("default", "sleep");
    let request = csr::generate(&me.spiffe_id("cluster.local")).unwrap();
    let chain = ca.sign(&request.csr_pem, &me, None).unwrap();
    assert_eq!(chain.len(), 3, "workload, intermediate, roots");
    assert_eq!(chain[1], ca_cert.pem());

    // The workload certificate verifies against the intermediate.
    let leaf = ::pem::parse(&chain[0]).unwrap();
    let (_, leaf) = X509Certificate::from_der(leaf.contents()).unwrap();
    let issuer = ::pem::parse(&chain[1]).unwrap();
    let (_, issuer) = X509Certificate::from_der(issuer.contents()).unwrap();
    leaf.verify_signature(Some(issuer.public_key())).unwrap();
}

#[test]
fn a_key_in_an_unsupported_format_is_named() {
    let dir = tempfile::tempdir().unwrap();
    load(dir.path());
    std::fs::write(
        dir.path().join(CA_KEY),
        "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n",
    )
    .unwrap();
    let error = CertificateAuthority::load_or_create(dir.path(), "cluster.local", DAY)
        .err()
        .unwrap()
        .to_string();
    assert!(
        error.contains("ca-key.pem") && error.contains("PKCS#8"),
        "{error}"
    );
}

#[test]
fn a_root_rotation_trusts_both_roots_until_the_old_one_retires() {
    use fleetmesh_ca::rotation;
    let dir = tempfile::tempdir().unwrap();
    let old_root = load(dir.path()).roots().to_string();
    let me = Identity::new("default", "sleep");
    let request = csr::generate(&me.spiffe_id("cluster.local")).unwrap();
    let issuer_of = |ca: &CertificateAuthority| {
        let chain = ca.sign(&request.csr_pem, &me, None).unwrap();
        let leaf = ::pem::parse(&chain[0]).unwrap();
        let (_, leaf) = X509Certificate::from_der(leaf.contents()).unwrap();
        leaf.issuer().to_string()
    };
    let old_issuer = issuer_of(&load(dir.path()));

    rotation::add_root(dir.path(), "cluster.local").unwrap();
    let added = load(dir.path());
    assert_eq!(::pem::parse_many(added.roots()).unwrap().len(), 2);
    assert!(added.roots().starts_with(old_root.trim_end()));
    assert_eq!(
        issuer_of(&added),
        old_issuer,
        "still signing with the old root"
    );
    assert!(rotation::add_root(dir.path(), "cluster.local").is_err());
    assert!(rotation::retire_roots(dir.path()).is_err());

    rotation::activate_root(dir.path()).unwrap();
    let activated = load(dir.path());
    assert_eq!(::pem::parse_many(activated.roots()).unwrap().len(), 2);
    let chain = activated.sign(&request.csr_pem, &me, None).unwrap();
    let leaf = ::pem::parse(&chain[0]).unwrap();
    let (_, leaf) = X509Certificate::from_der(leaf.contents()).unwrap();
    let new_root = std::fs::read_to_string(dir.path().join(CA_CERT)).unwrap();
    let root_block = ::pem::parse(&new_root).unwrap();
    let (_, root) = X509Certificate::from_der(root_block.contents()).unwrap();
    leaf.verify_signature(Some(root.public_key())).unwrap();
    assert!(rotation::activate_root(dir.path()).is_err());

    rotation::retire_roots(dir.path()).unwrap();
    let retired = load(dir.path());
    assert_eq!(retired.roots().trim_end(), new_root.trim_end());
}

#[test]
fn a_key_that_is_not_the_certificates_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    load(dir.path());
    let other = rcgen::KeyPair::generate().unwrap();
    std::fs::write(dir.path().join(CA_KEY), other.serialize_pem()).unwrap();
    let error = CertificateAuthority::load_or_create(dir.path(), "cluster.local", DAY)
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("not the key of ca-cert.pem"), "{error}");
}

#[test]
fn serving_certificates_name_their_hosts_and_serve_tls_only() {
    let dir = tempfile::tempdir().unwrap();
    let ca = load(dir.path());
    let hosts = ["127.0.0.1".to_string(), "meshd.example".to_string()];
    let serving = ca
        .issue_serving_certificate(&hosts, Duration::from_secs(3600))
        .unwrap();
    assert!(serving.key.contains("BEGIN PRIVATE KEY"));
    let (_, block) = parse_x509_pem(serving.chain.as_bytes()).unwrap();
    let (_, cert) = X509Certificate::from_der(&block.contents).unwrap();
    let names: Vec<String> = cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(names, ["IPAddress(7f:00:00:01)", "DNSName(meshd.example)"]);
    let usage = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(usage.server_auth && !usage.client_auth);
    assert!(lifetime(&serving.chain) <= Duration::from_secs(3600 + 600));
}
