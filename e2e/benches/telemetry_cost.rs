//! What Istio's workload metrics cost per request (`fleetmesh_xds::telemetry`): one
//! Envoy (one worker thread) with two identical HTTP listeners answering 200, one of them
//! with the telemetry meshd configures on a sidecar's inbound side (the stats access
//! logger, the peer headers moved into metadata). The same requests, carrying the peer
//! headers a client sidecar sends, go to each in turn; prints Envoy's CPU time per
//! request (from /proc) and the client's latency for both, and their ratio. Loopback only.
//!   cargo bench -p fleetmesh-e2e --bench telemetry_cost [-- REQUESTS]

use envoy_types::pb::envoy::config::bootstrap::v3::{Bootstrap, bootstrap};
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, Route, RouteConfiguration, RouteMatch, VirtualHost, route, route_match,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, http_connection_manager, http_filter,
};
use envoy_types::util::pack_any;
use fleetmesh_xds::telemetry::{self, Side};
use std::time::{Duration, Instant};

const CONCURRENCY: usize = 8;

fn listener(name: &str, port: u16, with_telemetry: bool) -> Listener {
    let mut http_filters = vec![HttpFilter {
        name: "envoy.filters.http.router".into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(
            Router::default(),
        ))),
        ..HttpFilter::default()
    }];
    let mut manager = HttpConnectionManager {
        stat_prefix: name.into(),
        route_specifier: Some(http_connection_manager::RouteSpecifier::RouteConfig(
            RouteConfiguration {
                virtual_hosts: vec![VirtualHost {
                    name: "all".into(),
                    domains: vec!["*".into()],
                    routes: vec![Route {
                        r#match: Some(RouteMatch {
                            path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
                            ..RouteMatch::default()
                        }),
                        action: Some(route::Action::DirectResponse(DirectResponseAction {
                            status: 200,
                            ..DirectResponseAction::default()
                        })),
                        ..Route::default()
                    }],
                    ..VirtualHost::default()
                }],
                ..RouteConfiguration::default()
            },
        )),
        ..HttpConnectionManager::default()
    };
    if with_telemetry {
        manager.access_log = telemetry::http(Some(Side::Inbound { mtls: false }));
        http_filters.insert(0, telemetry::peer_headers_filter());
    }
    manager.http_filters = http_filters;
    Listener {
        name: name.into(),
        address: Some(loopback(port)),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(pack_any(manager))),
            }],
            ..FilterChain::default()
        }],
        ..Listener::default()
    }
}

fn loopback(port: u16) -> envoy_types::pb::envoy::config::core::v3::Address {
    use envoy_types::pb::envoy::config::core::v3::{
        Address, SocketAddress, address, socket_address,
    };
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: "127.0.0.1".into(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(port.into())),
            ..SocketAddress::default()
        })),
    }
}

/// Envoy's user + system CPU time so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("Envoy runs");
    // Fields after the command name (which may hold spaces): utime is the 12th, stime the 13th.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<u64> = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|f| f.parse().unwrap())
        .collect();
    // Clock ticks of 1/100 s on Linux.
    Duration::from_millis((fields[0] + fields[1]) * 10)
}

struct Phase {
    cpu_per_request: Duration,
    p50: Duration,
    p99: Duration,
}

async fn run(pid: u32, port: u16, requests: usize) -> Phase {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!("http://127.0.0.1:{port}/");
    let headers: Vec<(&str, &str)> = fleetmesh_api::peer::ATTRIBUTES
        .iter()
        .map(|a| (a.header, "reviews-v1"))
        .collect();
    let cpu_before = cpu_time(pid);
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let (client, url, headers) = (client.clone(), url.clone(), headers.clone());
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            for _ in 0..requests / CONCURRENCY {
                let started = Instant::now();
                let mut request = client.get(&url);
                for (name, value) in &headers {
                    request = request.header(*name, *value);
                }
                let response = request.send().await.expect("Envoy answers");
                assert_eq!(response.status(), 200);
                samples.push(started.elapsed());
            }
            samples
        }));
    }
    let mut samples = Vec::new();
    for task in tasks {
        samples.extend(task.await.unwrap());
    }
    let cpu = cpu_time(pid) - cpu_before;
    samples.sort();
    let at = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    Phase {
        cpu_per_request: cpu / samples.len() as u32,
        p50: at(0.50),
        p99: at(0.99),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let requests: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20_000);
    let (plain, measured) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let bootstrap = Bootstrap {
        static_resources: Some(bootstrap::StaticResources {
            listeners: vec![
                listener("plain", plain, false),
                listener("telemetry", measured, true),
            ],
            ..Default::default()
        }),
        // As the agent runs Envoy (the peer headers' regex needs it).
        layered_runtime: Some(fleetmesh_agent::bootstrap::runtime()),
        ..Bootstrap::default()
    };
    let path = dir.path().join("bootstrap.pb");
    std::fs::write(&path, prost::Message::encode_to_vec(&bootstrap)).unwrap();
    let envoy = fleetmesh_agent::envoy::locate(None).expect("Envoy");
    let mut child = std::process::Command::new(envoy)
        .args([
            "--disable-hot-restart",
            "--concurrency",
            "1",
            "-l",
            "error",
            "-c",
        ])
        .arg(&path)
        .spawn()
        .expect("Envoy starts");
    let pid = child.id();
    let ready = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", measured)).is_err() {
        assert!(
            ready.elapsed() < Duration::from_secs(20),
            "Envoy did not listen"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Warm both, then measure each.
    run(pid, plain, 1_000).await;
    run(pid, measured, 1_000).await;
    let without = run(pid, plain, requests).await;
    let with = run(pid, measured, requests).await;
    child.kill().ok();
    child.wait().ok();
    println!("{requests} requests, {CONCURRENCY} at a time, Envoy on one worker thread:");
    for (what, phase) in [("without telemetry", &without), ("with telemetry", &with)] {
        println!(
            "  {what:<18} Envoy CPU {:>6.1} µs/request   latency p50 {:>6.3} ms  p99 {:>6.3} ms",
            phase.cpu_per_request.as_secs_f64() * 1e6,
            phase.p50.as_secs_f64() * 1e3,
            phase.p99.as_secs_f64() * 1e3,
        );
    }
    println!(
        "  telemetry costs {:+.1} µs of Envoy CPU per request ({:.2}× without)",
        (with.cpu_per_request.as_secs_f64() - without.cpu_per_request.as_secs_f64()) * 1e6,
        with.cpu_per_request.as_secs_f64() / without.cpu_per_request.as_secs_f64(),
    );
}
