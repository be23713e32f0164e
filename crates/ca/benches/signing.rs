//! CSR signing throughput on one core, next to its physical floor: one plain ECDSA P-256
//! signature over a certificate-sized message (what signing a certificate must cost at
//! least). `cargo bench -p fleetmesh-ca`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fleetmesh_ca::{CertificateAuthority, Identity, csr};
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
use std::hint::black_box;
use std::time::Duration;

fn signing(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let ca =
        CertificateAuthority::load_or_create(dir.path(), "cluster.local", Duration::MAX).unwrap();
    let caller = Identity::new("default", "bench");
    let request = csr::generate(&caller.spiffe_id("cluster.local")).unwrap();

    let mut group = c.benchmark_group("ca");
    group.throughput(Throughput::Elements(1));
    group.bench_function("sign CSR (parse, verify, issue)", |b| {
        b.iter(|| ca.sign(black_box(&request.csr_pem), &caller, None).unwrap())
    });

    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
    let key =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let _ = key.public_key();
    // About the size of a workload certificate's to-be-signed part.
    let message = vec![0x5au8; 400];
    group.bench_function("floor: one ECDSA P-256 signature", |b| {
        b.iter(|| key.sign(&rng, black_box(&message)).unwrap())
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5)).sample_size(50);
    targets = signing
}
criterion_main!(benches);
