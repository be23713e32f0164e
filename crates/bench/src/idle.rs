//! Scale to zero: many registered meshes, most of them idle. One meshd (a release build,
//! no `--kubeconfig`: a fleet's control plane) gets N members, each a project of its own,
//! all of them the same local API server under different names (the server's cost per
//! member is what is measured, not the cluster's). It reports meshd's memory and the API
//! server's open watches with every member awake, then once they have all scaled to zero,
//! then the time a sidecar of a sleeping member takes from connecting to its first
//! complete config (its member woken on the way), for the members that are active.

use crate::control_plane::{ControlPlane, Kind, Serves};
use crate::sidecar::{self, Identity};
use anyhow::Context;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::value::Kind as ValueKind;
use envoy_types::pb::google::protobuf::{Struct, Value};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// `fleetmesh-bench idle`'s flags.
#[derive(clap::Args)]
pub struct IdleArgs {
    /// The local cluster every member names (its admin kubeconfig, with a token).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// meshd's binary (a release build).
    #[arg(long)]
    meshd: PathBuf,
    /// Registered meshes (one member cluster each).
    #[arg(long, default_value_t = 100)]
    meshes: usize,
    /// Of them, how many get a sidecar (and so wake) at the end.
    #[arg(long, default_value_t = 10)]
    active: usize,
    /// meshd's --idle-after.
    #[arg(long, default_value_t = 5)]
    idle_after_seconds: u64,
    #[arg(long, default_value = "target/bench-idle")]
    work_dir: PathBuf,
}

/// One moment's figures.
struct Figures {
    rss_mib: f64,
    watches: u64,
}

/// meshd's fleet API, with its admin token.
struct FleetApi {
    http: reqwest::Client,
    base: String,
    admin: String,
}

impl FleetApi {
    fn of(plane: &ControlPlane) -> anyhow::Result<FleetApi> {
        let state = plane.state_dir.clone().context("meshd has a state dir")?;
        Ok(FleetApi {
            http: reqwest::Client::new(),
            base: format!("http://{}", plane.http_address),
            admin: std::fs::read_to_string(state.join("admin-token"))?
                .trim()
                .to_string(),
        })
    }

    /// Registers member `m-I` of project `p-I` with `kubeconfig` and enables its mesh.
    async fn add(&self, i: usize, kubeconfig: &str) -> anyhow::Result<()> {
        let (project, cluster) = (format!("p-{i:03}"), format!("m-{i:03}"));
        let body = serde_json::json!({"location": "local", "channel": "regular", "kubeconfig": kubeconfig});
        let url = format!("{}/v1/projects/{project}/memberships/{cluster}", self.base);
        let put = self.http.put(url).bearer_auth(&self.admin).json(&body);
        put.send().await?.error_for_status()?;
        let url = format!("{}/v1/projects/{project}/mesh/enable", self.base);
        let post = self.http.post(url).bearer_auth(&self.admin);
        post.send().await?.error_for_status()?;
        Ok(())
    }

    /// How many members are served and awake (or, `awake` false, asleep).
    async fn count(&self, awake: bool) -> Option<usize> {
        let url = format!("{}/v1/projects", self.base);
        let answer = self
            .http
            .get(url)
            .bearer_auth(&self.admin)
            .send()
            .await
            .ok()?;
        let projects: serde_json::Value = answer.json().await.ok()?;
        let members = projects
            .as_object()?
            .values()
            .filter_map(|p| p["memberships"].as_object())
            .flat_map(|m| m.values());
        Some(
            members
                .filter(|m| m["served"] == true && (m["idle"] == false) == awake)
                .count(),
        )
    }

    async fn wait_for(&self, awake: bool, want: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(600);
        while self.count(awake).await != Some(want) {
            if Instant::now() > deadline {
                anyhow::bail!("not {want} members awake={awake} within 600 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }
}

pub async fn run(args: IdleArgs) -> anyhow::Result<()> {
    let kubeconfig = std::fs::read_to_string(&args.kubeconfig)
        .with_context(|| format!("reading {}", args.kubeconfig.display()))?;
    let client = kube::Client::try_from(fleetmesh_kube::client_config(&args.kubeconfig).await?)?;
    let idle_after = Duration::from_secs(args.idle_after_seconds);
    let start = |restart| {
        let serves = Serves::Fleet {
            idle_after,
            restart,
        };
        ControlPlane::start(Kind::Meshd, &args.meshd, serves, &[], 0, &args.work_dir)
    };
    let plane = start(false).await?;
    let api = FleetApi::of(&plane)?;
    let none = figures(&plane, &client).await?;
    println!(
        "no member: {:.1} MiB, API server watches {}",
        none.rss_mib, none.watches
    );
    let registered = Instant::now();
    for i in 0..args.meshes {
        api.add(i, &kubeconfig).await?;
    }
    api.wait_for(true, args.meshes).await?;
    let awake = figures(&plane, &client).await?;
    let took = registered.elapsed().as_secs_f64();
    println!(
        "{} awake ({took:.1} s from the first registration): {:.1} MiB, watches {}",
        args.meshes, awake.rss_mib, awake.watches
    );
    api.wait_for(false, args.meshes).await?;
    let asleep = figures(&plane, &client).await?;
    println!(
        "{} asleep after --idle-after: {:.1} MiB (freed memory the allocator keeps), watches {}",
        args.meshes, asleep.rss_mib, asleep.watches
    );
    plane.stop().await;
    // A restarted meshd finds them all and keeps them asleep: their true cost.
    let plane = start(true).await?;
    let api = FleetApi::of(&plane)?;
    api.wait_for(false, args.meshes).await?;
    let restarted = figures(&plane, &client).await?;
    println!(
        "{} asleep after a restart: {:.1} MiB, watches {}",
        args.meshes, restarted.rss_mib, restarted.watches
    );
    let active = args.active.min(args.meshes);
    let (wakes, sidecars) = wake(&plane, &client, active).await?;
    let mixed = figures(&plane, &client).await?;
    println!(
        "{active} active, {} idle: {:.1} MiB, watches {}",
        args.meshes - active,
        mixed.rss_mib,
        mixed.watches
    );
    let median = wakes.get(wakes.len() / 2).copied().unwrap_or_default();
    let worst = wakes.last().copied().unwrap_or_default();
    println!(
        "wake to first complete config: median {} ms, worst {} ms",
        median.as_millis(),
        worst.as_millis()
    );
    let n = args.meshes as f64;
    println!(
        "per mesh: awake {:.2} MiB and {:.1} watches; idle {:.3} MiB and {:.1} watches",
        (awake.rss_mib - none.rss_mib) / n,
        (awake.watches - none.watches) as f64 / n,
        (restarted.rss_mib - none.rss_mib).max(0.0) / n,
        restarted.watches.saturating_sub(none.watches) as f64 / n,
    );
    for task in sidecars {
        task.abort();
    }
    plane.stop().await;
    Ok(())
}

/// Connects a sidecar to each of the first `active` (sleeping) members, one after the
/// other; each one's time to its first complete config, sorted, and the sidecars.
async fn wake(
    plane: &ControlPlane,
    client: &kube::Client,
    active: usize,
) -> anyhow::Result<(Vec<Duration>, Vec<tokio::task::JoinHandle<()>>)> {
    let token = pod_token(client).await?;
    let endpoint =
        tonic::transport::Endpoint::from_shared(format!("http://{}", plane.xds_address))?;
    let mut wakes = Vec::new();
    let mut sidecars = Vec::new();
    for i in 0..active {
        let cluster = format!("m-{i:03}");
        let stats = sidecar::SharedStats::default();
        let identity = Identity {
            node: node(&cluster),
            token: Some(token.clone()),
            cluster: Some(cluster),
            protocol: sidecar::Protocol::Sotw,
            calls: vec![],
        };
        // A connection each, as proxies have (meshd limits the streams of one).
        sidecars.push(tokio::spawn(sidecar::run(
            endpoint.connect_lazy(),
            identity,
            stats.clone(),
            None,
        )));
        wakes.push(wait_complete(&stats).await?);
    }
    wakes.sort();
    Ok((wakes, sidecars))
}

async fn figures(plane: &ControlPlane, client: &kube::Client) -> anyhow::Result<Figures> {
    let usage = plane.usage()?;
    Ok(Figures {
        rss_mib: usage.rss_bytes as f64 / (1024.0 * 1024.0),
        watches: watches(client).await?,
    })
}

/// Open WATCH requests on the API server (`apiserver_longrunning_requests`).
async fn watches(client: &kube::Client) -> anyhow::Result<u64> {
    let request = http::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(request).await?;
    Ok(text
        .lines()
        .filter(|l| {
            l.starts_with("apiserver_longrunning_requests{") && l.contains("verb=\"WATCH\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64)
}

/// A token of `default/default` for the CA's audience, as a pod has.
async fn pod_token(client: &kube::Client) -> anyhow::Result<String> {
    let accounts: kube::Api<ServiceAccount> = kube::Api::namespaced(client.clone(), "default");
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![fleetmesh_kube::token_review::AUDIENCE.into()],
            expiration_seconds: Some(3600),
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    let answer = accounts
        .create_token_request("default", &kube::api::PostParams::default(), &request)
        .await?;
    answer.status.map(|s| s.token).context("no token")
}

/// A sidecar of `default/default` in `cluster`.
fn node(cluster: &str) -> Node {
    let text = |v: &str| Value {
        kind: Some(ValueKind::StringValue(v.to_string())),
    };
    let fields = [
        ("NAMESPACE", "default"),
        ("SERVICE_ACCOUNT", "default"),
        ("CLUSTER_ID", cluster),
        ("ISTIO_VERSION", env!("CARGO_PKG_VERSION")),
        ("INTERCEPTION_MODE", "REDIRECT"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), text(v)))
    .collect();
    Node {
        id: format!("sidecar~127.0.0.1~bench-{cluster}.default~default.svc.cluster.local"),
        metadata: Some(Struct { fields }),
        ..Node::default()
    }
}

async fn wait_complete(stats: &sidecar::SharedStats) -> anyhow::Result<Duration> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(after) = stats.lock().complete_after {
            return Ok(after);
        }
        if Instant::now() > deadline {
            let error = stats.lock().last_error.clone().unwrap_or_default();
            anyhow::bail!("no complete config within 60 s ({error})");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
