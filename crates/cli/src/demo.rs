//! `fleetmesh demo`: meshd, four workloads with real Envoy sidecars on loopback, a
//! VirtualService splitting reviews 80/20, and traffic that shows the split.

use crate::local_mesh::{LocalMesh, Workload, WorkloadSpec};
use crate::sample_app::VERSION_HEADER;
use anyhow::Context;
use fleetmesh_agent::XdsMode;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub struct DemoOptions {
    pub config_dir: PathBuf,
    pub requests: usize,
    pub exit: bool,
    pub xds_mode: XdsMode,
}

pub const SERVICES: &str = r#"# The demo's services. Each selects its workloads (workloads/*.yaml) by label.
apiVersion: v1
kind: Service
metadata: {name: frontend, namespace: default}
spec:
  selector: {app: frontend}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: default}
spec:
  selector: {app: ratings}
  ports: [{name: http, port: 9080}]
"#;

pub const ROUTING: &str = r#"# Edit the weights below (each destination gets its share of their sum) and save: meshd pushes the change to
# every sidecar and the demo's traffic moves within a second.
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 80
    - destination: {host: reviews, subset: v2}
      weight: 20
"#;

pub const SECURITY: &str = r#"# Mutual TLS everywhere: sidecars accept only mTLS from workloads with certificates
# from meshd's CA. Set the mode to PERMISSIVE to let plaintext clients in too.
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec:
  mtls: {mode: STRICT}
"#;

pub async fn run(options: DemoOptions) -> anyhow::Result<()> {
    let started = Instant::now();
    println!(
        "Starting meshd with config in {}",
        options.config_dir.display()
    );
    let mesh = LocalMesh::start(Some(options.config_dir.clone()), options.xds_mode).await?;
    mesh.write("services.yaml", SERVICES)?;
    mesh.write("routing.yaml", ROUTING)?;
    mesh.write("security.yaml", SECURITY)?;
    let http = mesh.meshd().http_address();
    println!(
        "meshd: xDS on {}, metrics and debug on http://{http}, status page http://{http}/status",
        mesh.meshd().xds_address(),
    );
    let mut workloads = Vec::new();
    for (name, app, version, port) in [
        ("frontend", "frontend", "v1", 8080),
        ("reviews-v1", "reviews", "v1", 9080),
        ("reviews-v2", "reviews", "v2", 9080),
        ("ratings", "ratings", "v1", 9080),
    ] {
        let workload = mesh
            .add_workload(WorkloadSpec::new(
                name,
                &[("app", app), ("version", version)],
                port,
            ))
            .await
            .with_context(|| format!("starting workload {name}"))?;
        println!(
            "  {name:<11} sidecar on {} (Envoy admin: unix socket {}), identity {}",
            workload.ip,
            workload.envoy.admin_socket().display(),
            workload.spiffe_id
        );
        workloads.push(workload);
    }
    let frontend = &workloads[0];
    wait_until_routed(frontend).await?;
    println!("Mesh up in {:.1}s.\n", started.elapsed().as_secs_f64());

    println!(
        "Sending {} requests from frontend to http://reviews:9080/ through its sidecar...",
        options.requests
    );
    let split = send(frontend, options.requests).await?;
    print_split(&split, options.requests);
    show_mtls(frontend, &workloads[1]).await;
    if options.exit {
        return shutdown(mesh, workloads).await;
    }
    println!(
        "\nThe mesh keeps running. Edit the weights in {} and watch the split move.\n\
         Ctrl-C stops everything.\n",
        options.config_dir.join("routing.yaml").display()
    );
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            () = tokio::time::sleep(Duration::from_secs(2)) => {
                let split = send(frontend, 100).await?;
                print_split(&split, 100);
            }
        }
    }
    println!("\nStopping...");
    shutdown(mesh, workloads).await
}

async fn shutdown(mut mesh: LocalMesh, workloads: Vec<Workload>) -> anyhow::Result<()> {
    for workload in workloads {
        tokio::task::block_in_place(|| workload.envoy.shutdown(Duration::ZERO));
    }
    mesh.stop_meshd().await;
    Ok(())
}

/// Waits until reviews answers through the frontend's sidecar.
async fn wait_until_routed(frontend: &Workload) -> anyhow::Result<()> {
    let client = frontend.client();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(response) = client.get("http://reviews:9080/").send().await
            && response.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("reviews did not answer through the frontend's sidecar within 30s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Shows what STRICT mTLS does: the identity reviews saw for the frontend's requests,
/// and a plaintext request straight to reviews refused.
async fn show_mtls(frontend: &Workload, reviews: &Workload) {
    let seen = match frontend.client().get("http://reviews:9080/").send().await {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(e) => e.to_string(),
    };
    let caller = seen
        .lines()
        .find_map(|l| l.strip_prefix("x-forwarded-client-cert: "))
        .and_then(|xfcc| xfcc.split(';').find_map(|part| part.strip_prefix("URI=")))
        .unwrap_or("none (not mTLS)");
    println!("reviews saw the caller's verified identity: {caller}");
    let direct = format!("http://{}/", reviews.address(9080));
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build();
    let outcome = match client {
        Ok(client) => match client.get(&direct).send().await {
            Ok(r) => format!("answered {} (mTLS is not STRICT)", r.status().as_u16()),
            Err(_) => "refused (STRICT mTLS)".to_string(),
        },
        Err(e) => e.to_string(),
    };
    println!("A plaintext request straight to {direct}, bypassing the sidecars: {outcome}");
}

/// Sends `count` requests and counts the answers by version (`error` for failures).
pub async fn send(from: &Workload, count: usize) -> anyhow::Result<BTreeMap<String, usize>> {
    let client = from.client();
    let mut split = BTreeMap::new();
    for _ in 0..count {
        let version = match client.get("http://reviews:9080/").send().await {
            Ok(r) if r.status().is_success() => r
                .headers()
                .get(VERSION_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("unknown")
                .to_string(),
            Ok(r) => format!("HTTP {}", r.status().as_u16()),
            Err(_) => "error".to_string(),
        };
        *split.entry(version).or_insert(0) += 1;
    }
    Ok(split)
}

fn print_split(split: &BTreeMap<String, usize>, total: usize) {
    let parts: Vec<String> = split
        .iter()
        .map(|(version, count)| {
            format!(
                "reviews {version}: {count} ({:.0}%)",
                100.0 * *count as f64 / total as f64
            )
        })
        .collect();
    println!("{}", parts.join(", "));
}
