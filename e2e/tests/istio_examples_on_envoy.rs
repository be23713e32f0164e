//! Real Envoy never rejects what meshd accepts: every Istio example meshd accepts (the
//! corpus of `istio_conformance`: Istio's samples and API reference, read from the pinned
//! modules) is loaded at once into one meshd, one file per example, and served to real
//! Envoys, sidecars and gateways carrying the labels the examples select, over
//! state-of-the-world and delta xDS. Every proxy must ACK all it is sent.
//!
//! Examples that would make meshd or Envoy reach past this machine are left out, and
//! counted: ServiceEntries whose hosts Envoy resolves through DNS, and JWT rules whose
//! keys meshd fetches from a URL. No request is sent through the proxies, so the
//! addresses the examples name never receive a packet.

use fleetmesh_api::{LoadedResource, Resource};
use fleetmesh_e2e::istio_corpus::{Example, examples};
use fleetmesh_e2e::{
    LocalMesh, Workload, XdsMode, eventually, istio_api_source, istio_source, nacks, syncz,
};
use std::collections::BTreeMap;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_envoys_accept_every_example_meshd_accepts() {
    let corpus = examples(&istio_source(), &istio_api_source());
    let accepted: Vec<(&Example, Vec<LoadedResource>)> = corpus
        .iter()
        .filter_map(|e| Some((e, fleetmesh_api::load_documents(None, &e.yaml).ok()?)))
        .collect();
    let (served, outside): (Vec<_>, Vec<_>) = accepted
        .into_iter()
        .partition(|(_, resources)| !resources.iter().any(|r| reaches_outside(&r.resource)));
    // Well over a hundred examples are accepted and stay inside: far fewer means the
    // corpus or the filter broke, and an empty load would pass anything.
    assert!(
        served.len() > 100,
        "only {} examples to serve",
        served.len()
    );
    let proxies = proxies_selected_by(served.iter().map(|(e, _)| *e));
    println!(
        "{} examples served ({} left out: they name addresses outside this machine) to {} proxies per mode",
        served.len(),
        outside.len(),
        proxies.len()
    );

    for mode in [XdsMode::Sotw, XdsMode::Delta] {
        let config = tempfile::tempdir().unwrap();
        for (index, (example, _)) in served.iter().enumerate() {
            let file = format!("{index:03}-{}-{}.yaml", example.kind, example.name);
            std::fs::write(config.path().join(file), &example.yaml).unwrap();
        }
        let mesh = LocalMesh::start(Some(config.path().into()), mode)
            .await
            .expect("meshd starts");
        // Examples may collide (two of one kind and name); meshd says which it refused.
        for error in mesh.meshd().config_errors() {
            println!("{mode:?}: meshd refused: {error}");
        }
        let mut started = Vec::new();
        for proxy in &proxies {
            let labels: Vec<(&str, &str)> = proxy
                .labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let workload = mesh
                .add_proxy(
                    proxy.kind,
                    &proxy.name,
                    &proxy.namespace,
                    "default",
                    &labels,
                )
                .await
                .unwrap_or_else(|e| panic!("{mode:?}: proxy {} starts: {e:#}", proxy.name));
            started.push(workload);
        }
        let rejected = settled_rejections(&mesh, &started).await;
        assert!(
            rejected.is_empty() && nacks(&mesh) == 0,
            "{mode:?}: Envoy rejected config meshd accepted ({} NACKs):\n{}",
            nacks(&mesh),
            rejected.join("\n")
        );
        let listeners: usize = started.iter().map(listener_count).sum();
        println!("{mode:?}: every proxy ACKed; {listeners} listeners in all");
    }
}

/// Whether serving `resource` would make meshd or Envoy contact an address outside this
/// machine: DNS resolution of a ServiceEntry's hosts or endpoints (unless every endpoint
/// is an address literal), or JWKS fetched from a URL.
fn reaches_outside(resource: &Resource) -> bool {
    use fleetmesh_api::networking::Resolution;
    match resource {
        Resource::ServiceEntry(entry) => {
            let spec = &entry.spec;
            let resolves = matches!(
                spec.resolution,
                Some(Resolution::Dns | Resolution::DnsRoundRobin)
            );
            resolves
                && (spec.endpoints.is_empty()
                    || spec
                        .endpoints
                        .iter()
                        .any(|e| e.address.parse::<std::net::IpAddr>().is_err()))
        }
        Resource::RequestAuthentication(policy) => {
            policy.spec.jwt_rules.iter().any(|rule| rule.jwks.is_none())
        }
        _ => false,
    }
}

/// A proxy to start: a sidecar per namespace the examples use, carrying every label their
/// workload selectors name there (the first value of a key), and a gateway per distinct
/// Gateway selector.
struct Proxy {
    kind: &'static str,
    name: String,
    namespace: String,
    labels: BTreeMap<String, String>,
}

fn proxies_selected_by<'a>(examples: impl Iterator<Item = &'a Example>) -> Vec<Proxy> {
    let mut sidecars: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut gateways: Vec<BTreeMap<String, String>> = Vec::new();
    for example in examples {
        let object: serde_yaml_ng::Value = serde_yaml_ng::from_str(&example.yaml).unwrap();
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string();
        let spec = &object["spec"];
        let labels = |selector: &serde_yaml_ng::Value| -> BTreeMap<String, String> {
            serde_yaml_ng::from_value(selector.clone()).unwrap_or_default()
        };
        let selected = sidecars.entry(namespace).or_default();
        if example.kind == "Gateway" {
            let selector = labels(&spec["selector"]);
            if !gateways.contains(&selector) {
                gateways.push(selector);
            }
            continue;
        }
        for selector in [
            &spec["selector"]["matchLabels"],
            &spec["workloadSelector"]["labels"],
        ] {
            for (key, value) in labels(selector) {
                selected.entry(key).or_insert(value);
            }
        }
    }
    let sidecars = sidecars.into_iter().map(|(namespace, labels)| Proxy {
        kind: "sidecar",
        name: format!("sidecar-{namespace}"),
        namespace,
        labels,
    });
    let gateways = gateways
        .into_iter()
        .enumerate()
        .map(|(index, labels)| Proxy {
            kind: "router",
            name: format!("gateway-{index}"),
            namespace: "istio-system".into(),
            labels,
        });
    sidecars.chain(gateways).collect()
}

/// Waits until every proxy has answered all it was sent (an ACK or a NACK of the latest
/// version of each type), and returns the NACKs, one line per proxy and type.
async fn settled_rejections(mesh: &LocalMesh, proxies: &[Workload]) -> Vec<String> {
    const TYPES: [&str; 4] = ["cluster", "endpoint", "listener", "route"];
    let mut rejected = Vec::new();
    for proxy in proxies {
        let status = eventually(
            "the proxy to answer all it was sent",
            Duration::from_secs(60),
            async || {
                let status = syncz(mesh, &proxy.node_id).await?;
                let version = |t: &str, what: &str| {
                    status[format!("{t}_{what}")]
                        .as_str()
                        .unwrap_or("")
                        .to_string()
                };
                // Every proxy is sent clusters and listeners; endpoints and routes only
                // when it has clusters and listeners that ask for them.
                let started = ["cluster", "listener"]
                    .iter()
                    .all(|t| !version(t, "sent").is_empty());
                let answered = TYPES.iter().all(|t| {
                    version(t, "sent") == version(t, "acked")
                        || !status[format!("{t}_nack")].is_null()
                });
                let settled = started && answered;
                settled.then_some(status)
            },
        )
        .await;
        for t in TYPES {
            if let Some(nack) = status[format!("{t}_nack")].as_str() {
                rejected.push(format!("  {} {t}: {nack}", proxy.name));
            }
        }
    }
    rejected
}

/// How many listeners `proxy`'s Envoy runs (from its admin `/listeners`).
fn listener_count(proxy: &Workload) -> usize {
    fleetmesh_agent::process::admin_request(proxy.envoy.admin_socket(), "GET", "/listeners")
        .map(|(_, body)| body.lines().filter(|l| !l.trim().is_empty()).count())
        .unwrap_or_default()
}
