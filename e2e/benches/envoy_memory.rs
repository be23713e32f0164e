//! What a real Envoy sidecar holds as the mesh grows: everything pushed (delta xDS,
//! meshd's default) against routes on demand (`--on-demand-routes`: virtual hosts and
//! the clusters of HTTP ports fetched when first called). For each
//! mesh size: N Services, each with an endpoint, a VirtualService per 10 of them, and
//! three sidecars that each call the same 10 services (backed by one more workload);
//! prints each sidecar's Envoy RSS (from /proc), its route and cluster counts, and the
//! xDS bytes per proxy. Loopback only: the endpoints of the services nobody calls are
//! 127.250.x.y addresses nothing is ever sent to.
//!   cargo bench -p fleetmesh-e2e --bench envoy_memory [-- SIZES]   (default 100,1000,5000)

use fleetmesh_e2e::*;
use std::time::Duration;

/// Sidecars measured per mesh.
const SIDECARS: usize = 3;
/// Services each sidecar calls.
const CALLED: usize = 10;

/// N services: the first CALLED served by the `backend` workload, the rest by a
/// WorkloadEntry each; a VirtualService (a timeout and retries) per 10.
fn mesh_of(services: usize) -> String {
    let mut yaml = String::new();
    for n in 0..services {
        let app = if n < CALLED {
            "backend".to_string()
        } else {
            format!("svc-{n}")
        };
        yaml.push_str(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{n}}}\n\
             spec: {{selector: {{app: {app}}}, ports: [{{name: http, port: 9080}}]}}\n---\n"
        ));
        if n >= CALLED {
            let address = format!("127.250.{}.{}", n / 250, n % 250 + 1);
            yaml.push_str(&format!(
                "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n\
                 metadata: {{name: svc-{n}}}\n\
                 spec: {{address: {address}, labels: {{app: {app}}}}}\n---\n"
            ));
        }
        if n % 10 == 0 {
            yaml.push_str(&format!(
                "apiVersion: networking.istio.io/v1\nkind: VirtualService\n\
                 metadata: {{name: svc-{n}}}\n\
                 spec: {{hosts: [svc-{n}], http: [{{timeout: 5s, retries: {{attempts: 2}}, \
                 route: [{{destination: {{host: svc-{n}}}}}]}}]}}\n---\n"
            ));
        }
    }
    yaml
}

/// Resident memory of the Envoy whose log is `log` (found by its command line), MiB.
fn rss_mib(log: &std::path::Path) -> f64 {
    let wanted = log.to_string_lossy().to_string();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if !String::from_utf8_lossy(&cmdline).contains(&wanted) {
            continue;
        }
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0);
        return kib / 1024.0;
    }
    0.0
}

struct Measured {
    rss_mib: Vec<f64>,
    virtual_hosts: usize,
    clusters: u64,
    bytes_per_proxy: u64,
}

async fn measure(services: usize, on_demand: bool) -> Measured {
    let mesh = LocalMesh::start_configured(None, XdsMode::Delta, |meshd| {
        meshd.on_demand_routes = on_demand;
    })
    .await
    .expect("meshd starts");
    mesh.write("mesh.yaml", &mesh_of(services)).unwrap();
    let backend = mesh
        .add_workload(WorkloadSpec::new("backend", &[("app", "backend")], 9080))
        .await
        .expect("backend starts");
    let mut sidecars = Vec::new();
    for n in 0..SIDECARS {
        let name = format!("client-{n}");
        let spec = WorkloadSpec::new(&name, &[("app", name.as_str())], 9080);
        sidecars.push(mesh.add_workload(spec).await.expect("a sidecar starts"));
    }
    let clusters = |proxy: &Workload| envoy_stat(proxy, "cluster_manager.active_clusters");
    for sidecar in &sidecars {
        if !on_demand {
            eventually(
                "the sidecar to hold every cluster",
                Duration::from_secs(300),
                async || (clusters(sidecar)? >= services as u64).then_some(()),
            )
            .await;
        }
        for n in 0..CALLED {
            wait_for_status(sidecar, &format!("http://svc-{n}:9080/"), 200).await;
        }
    }
    // Settled: what Envoy keeps, not what it held while loading.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let metrics = mesh.meshd().metrics();
    let types = ["cds", "eds", "lds", "rds", "vhds"];
    let bytes: u64 = types.iter().map(|t| metrics.pushed_bytes_of(t)).sum();
    let measured = Measured {
        rss_mib: sidecars
            .iter()
            .map(|s| rss_mib(s.envoy.log_path()))
            .collect(),
        virtual_hosts: envoy_virtual_hosts(&sidecars[0]).len(),
        clusters: clusters(&sidecars[0]).unwrap_or(0),
        bytes_per_proxy: bytes / (SIDECARS as u64 + 1),
    };
    assert_eq!(nacks(&mesh), 0, "Envoy rejected config");
    drop((sidecars, backend));
    measured
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_else(|| "100,1000,5000".into())
        .split(',')
        .map(|s| s.parse().expect("sizes are numbers: 100,1000,5000"))
        .collect();
    println!(
        "| services | routes | Envoy RSS per sidecar (MiB) | virtual hosts held | clusters | xDS bytes per proxy |"
    );
    println!("|---:|---|---:|---:|---:|---:|");
    for services in sizes {
        for (on_demand, mode) in [(false, "all pushed"), (true, "on demand")] {
            let m = measure(services, on_demand).await;
            let rss: Vec<String> = m.rss_mib.iter().map(|r| format!("{r:.1}")).collect();
            println!(
                "| {services} | {mode} | {} | {} | {} | {} |",
                rss.join(" / "),
                m.virtual_hosts,
                m.clusters,
                m.bytes_per_proxy
            );
        }
    }
}
