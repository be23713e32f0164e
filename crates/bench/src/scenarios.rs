//! One control plane, N sidecars, the scenarios in turn: connect storm, steady state,
//! route change, endpoint churn. Returns the figures as a [`RunResult`].

use crate::control_plane::{CLUSTER_ID, ControlPlane, Kind, Usage};
use crate::fleet::Fleet;
use crate::report::{Churn, Convergence, Latency, RunResult, Storm, percentile};
use crate::sidecar::{Identity, Probe, Protocol};
use crate::workload::{self, PodIdentity, Shape};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind as ValueKind};
use kube::Client;
use std::time::{Duration, Instant};

pub struct Plan {
    pub shape: Shape,
    pub proxies: usize,
    pub observers: usize,
    pub route_changes: usize,
    pub churn: Duration,
    /// Scale one Deployment up and one down per this long during churn.
    pub churn_interval: Duration,
    pub storm_timeout: Duration,
    /// The version the sidecars claim (istiod gates features on it).
    pub proxy_version: String,
    pub scoped: bool,
    pub protocol: Protocol,
}

/// How many services each sidecar's app calls, on demand (as in the real-Envoy memory
/// benchmark).
const CALLS: usize = 10;

impl Plan {
    /// Clusters a complete config holds at least: every service, or with Sidecar scoping
    /// or on demand at least one.
    fn expected_clusters(&self) -> usize {
        if self.scoped || self.protocol == Protocol::OnDemand {
            1
        } else {
            self.shape.services
        }
    }

    /// The hosts sidecar `i` calls: service 0 (whose route the benchmark changes, so that
    /// every sidecar is affected, as in the other modes) and the next ones after
    /// `i × (CALLS - 1)`, so that together the sidecars call every service.
    fn calls(&self, i: usize) -> Vec<String> {
        if self.protocol != Protocol::OnDemand {
            return Vec::new();
        }
        let services = self.shape.services.max(1);
        let mut calls: Vec<usize> = std::iter::once(0)
            .chain((1..CALLS).map(|k| (i * (CALLS - 1) + k) % services))
            .collect();
        calls.sort_unstable();
        calls.dedup();
        calls.into_iter().map(|s| self.shape.host(s)).collect()
    }
}

fn text(s: &str) -> Value {
    Value {
        kind: Some(ValueKind::StringValue(s.to_string())),
    }
}

/// Sidecar `i` impersonates pod `i mod P`; beyond P, under a name of its own with the
/// pod's labels (both control planes then fall back to the labels the node carries).
pub fn identities(
    pods: &[PodIdentity],
    count: usize,
    plan: &Plan,
    plane: &ControlPlane,
) -> anyhow::Result<Vec<Identity>> {
    let version = plan.proxy_version.as_str();
    let issuer = match &plane.ca_dir {
        Some(dir) => Some(fleetmesh_ca::TokenIssuer::load_or_create(dir)?),
        None => None,
    };
    anyhow::ensure!(!pods.is_empty(), "the workload has no pods");
    Ok((0..count)
        .map(|i| {
            let pod = &pods[i % pods.len()];
            let name = match i / pods.len() {
                0 => pod.name.clone(),
                copy => format!("{}-sim{copy}", pod.name),
            };
            let labels = Struct {
                fields: pod
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), text(v)))
                    .collect(),
            };
            let mut fields: std::collections::HashMap<String, Value> = [
                ("ISTIO_VERSION", version),
                ("NAMESPACE", &pod.namespace),
                ("SERVICE_ACCOUNT", &pod.service_account),
                ("CLUSTER_ID", CLUSTER_ID),
                ("INSTANCE_IPS", &pod.ip),
                ("MESH_ID", "cluster.local"),
                (
                    "WORKLOAD_NAME",
                    pod.labels.get("app").map_or("", String::as_str),
                ),
                ("INTERCEPTION_MODE", "REDIRECT"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), text(v)))
            .collect();
            fields.insert(
                "LABELS".into(),
                Value {
                    kind: Some(ValueKind::StructValue(labels)),
                },
            );
            let node = Node {
                id: format!(
                    "sidecar~{}~{name}.{ns}~{ns}.svc.cluster.local",
                    pod.ip,
                    ns = pod.namespace
                ),
                cluster: pod.labels.get("app").cloned().unwrap_or_default(),
                metadata: Some(Struct { fields }),
                ..Node::default()
            };
            let token = issuer.as_ref().map(|issuer| {
                let identity = fleetmesh_ca::Identity {
                    namespace: pod.namespace.clone(),
                    service_account: pod.service_account.clone(),
                };
                // Longer than any benchmark runs.
                issuer
                    .issue(&identity, Duration::from_secs(24 * 3600))
                    .token
            });
            Identity {
                node,
                token,
                cluster: None,
                protocol: plan.protocol,
                calls: plan.calls(i),
            }
        })
        .collect())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn cpu_between(before: &Usage, after: &Usage) -> f64 {
    after.cpu.saturating_sub(before.cpu).as_secs_f64()
}

/// Waits until one sidecar gets a config with every service in it: the control plane
/// has read the cluster. Both sides are measured from that point.
async fn wait_synced(
    plane: &ControlPlane,
    pods: &[PodIdentity],
    plan: &Plan,
) -> anyhow::Result<()> {
    let probe = Fleet::launch(
        &plane.xds_address.to_string(),
        identities(pods, 1, plan, plane)?,
        1,
    )?;
    let synced = probe
        .wait_complete(plan.expected_clusters(), Duration::from_secs(180))
        .await;
    probe.stop().await;
    anyhow::ensure!(
        synced,
        "{} never served the whole workload to a sidecar",
        plane.kind.name()
    );
    Ok(())
}

pub async fn run(
    kind: Kind,
    binary: &std::path::Path,
    kubeconfig: &std::path::Path,
    client: &Client,
    core: usize,
    work_dir: &std::path::Path,
    plan: &Plan,
) -> anyhow::Result<RunResult> {
    eprintln!(
        "{} ({}): {} sidecars",
        kind.name(),
        plan.protocol.name(),
        plan.proxies
    );
    let serves = crate::control_plane::Serves::Cluster(kubeconfig);
    let options = crate::control_plane::options(kind, plan.protocol);
    let plane = ControlPlane::start(kind, binary, serves, &options, core, work_dir).await?;
    let pods = workload::pods(client).await?;
    wait_synced(&plane, &pods, plan).await?;
    let before_storm = plane.usage()?;

    // Connect storm: every sidecar at once.
    let fleet = Fleet::launch(
        &plane.xds_address.to_string(),
        identities(&pods, plan.proxies, plan, &plane)?,
        plan.observers,
    )?;
    let all_complete = fleet
        .wait_complete(plan.expected_clusters(), plan.storm_timeout)
        .await;
    let after_storm = plane.usage()?;
    let mut times: Vec<Duration> = fleet.completion_times().into_iter().flatten().collect();
    times.sort();
    let storm_totals = fleet.totals();
    let storm = Storm {
        all_complete_s: all_complete
            .then(|| times.last().map(Duration::as_secs_f64))
            .flatten(),
        p50_s: percentile(&times, 50.0).map(|d| d.as_secs_f64()),
        p99_s: percentile(&times, 99.0).map(|d| d.as_secs_f64()),
        complete: times.len(),
        peak_rss_mib: mib(after_storm.peak_rss_bytes),
        cpu_s: cpu_between(&before_storm, &after_storm),
        reconnects: storm_totals.reconnects,
        stream_error: fleet.last_error(),
    };
    eprintln!("  connect storm: {storm:?}");
    // The initial config once per sidecar: not re-sent configs after reconnects.
    let configs = storm_totals.initial_configs.max(1) as f64;
    let bytes_per_proxy = storm_totals.initial_bytes as f64 / configs;

    // Steady state.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let steady = plane.usage()?;
    eprintln!("  steady RSS {:.1} MiB", mib(steady.rss_bytes));

    // Route change: edit one VirtualService, wait for the observers to have it.
    let mut route_latencies = Vec::new();
    let mut affected = 0;
    let before_routes = plane.usage()?;
    for change in 0..plan.route_changes {
        // Unique per run: a marker an earlier run left in place would be no change.
        let marker = format!(
            "bench-{}-{}-{change}-{}",
            kind.name(),
            plan.protocol.name(),
            plan.proxies
        );
        let id = fleet.mark(Probe::RouteText(marker.clone().into_bytes()));
        let since = workload::change_route(client, &plan.shape, &marker).await?;
        let arrival = fleet
            .wait_arrival(id, since, Duration::from_secs(3), Duration::from_secs(60))
            .await;
        affected = affected.max(arrival.latencies.len());
        route_latencies.extend(arrival.latencies);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let after_routes = plane.usage()?;
    fleet.clear_marks();
    let route_change = convergence(
        route_latencies,
        affected,
        plan.route_changes,
        &before_routes,
        &after_routes,
    );
    eprintln!("  route change: {route_change:?}");

    // Endpoint churn: one Deployment up and an earlier one back down, every interval.
    // Not on demand: each sidecar then holds the endpoints of the few services it calls,
    // and the observers' timings would cover only those.
    let churn = if plan.churn.is_zero() || plan.protocol == Protocol::OnDemand {
        None
    } else {
        Some(endpoint_churn(&fleet, &plane, client, plan).await?)
    };
    eprintln!("  endpoint churn: {churn:?}");

    fleet.stop().await;
    plane.stop().await;
    Ok(RunResult {
        control_plane: kind.name().into(),
        protocol: plan.protocol.name().into(),
        proxies: plan.proxies,
        services: plan.shape.services,
        pods: plan.shape.pods(),
        scoped: plan.scoped,
        settings: crate::control_plane::non_default_settings(kind, &options),
        storm,
        steady_rss_mib: mib(steady.rss_bytes),
        route_change,
        churn,
        bytes_per_proxy,
    })
}

async fn endpoint_churn(
    fleet: &Fleet,
    plane: &ControlPlane,
    client: &Client,
    plan: &Plan,
) -> anyhow::Result<Churn> {
    let mut new_endpoints = workload::watch_new_endpoints(client);
    // The watch lists first; only what appears after counts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = plane.usage()?;
    let totals_before = fleet.totals();
    let started = Instant::now();
    let mut marks: Vec<(u64, Instant)> = Vec::new();
    let mut scaled_up = std::collections::VecDeque::new();
    let mut next = 1;
    let mut changes = 0;
    let mut tick = tokio::time::interval(plan.churn_interval);
    while started.elapsed() < plan.churn {
        tokio::select! {
            _ = tick.tick() => {
                let s = next % plan.shape.services;
                next += 7;
                workload::scale(client, &plan.shape, s, plan.shape.endpoints + 1).await?;
                scaled_up.push_back(s);
                changes += 1;
                if scaled_up.len() > 5 && let Some(down) = scaled_up.pop_front() {
                    workload::scale(client, &plan.shape, down, plan.shape.endpoints).await?;
                    changes += 1;
                }
            }
            Some((address, seen)) = new_endpoints.recv() => {
                marks.push((fleet.mark(Probe::Endpoint(address)), seen));
            }
        }
    }
    for s in scaled_up {
        workload::scale(client, &plan.shape, s, plan.shape.endpoints).await?;
        changes += 1;
    }
    // Let the last changes arrive.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = plane.usage()?;
    let pushes = fleet.totals().since(&totals_before);
    let mut latencies = Vec::new();
    let mut missing = 0;
    for (id, since) in &marks {
        let got = fleet.arrival(*id, *since).latencies;
        if got.is_empty() {
            missing += 1;
        }
        latencies.extend(got);
    }
    fleet.clear_marks();
    Ok(Churn {
        seconds: plan.churn.as_secs_f64(),
        scale_changes: changes,
        new_endpoints: marks.len(),
        endpoints_never_seen: missing,
        pushes: pushes.pushes(),
        pushes_per_proxy: pushes.pushes() as f64 / plan.proxies as f64,
        latency: Latency::of(latencies),
        cpu_s: cpu_between(&before, &after),
    })
}

fn convergence(
    latencies: Vec<Duration>,
    affected: usize,
    changes: usize,
    before: &Usage,
    after: &Usage,
) -> Convergence {
    Convergence {
        changes,
        affected_observers: affected,
        samples: latencies.len(),
        latency: Latency::of(latencies),
        cpu_s_per_change: cpu_between(before, after) / changes.max(1) as f64,
    }
}
