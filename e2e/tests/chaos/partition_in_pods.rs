//! A network partition made where a real one happens: in the pods' own network namespaces
//! on the real node, every packet between the pods and meshd's xDS port dropped (both
//! ways, new connections too) while the pods keep talking to each other.

use super::{ALONE, PARTITION, pushes};
use fleetmesh_e2e::load::{RequestLog, ServiceAddress, load_deployment, reviews_with_budget};
use fleetmesh_e2e::real_node::{
    InNamespace, NODE_IP, install, pod_ip, pods, restarted, start_cluster, start_meshd,
};
use std::net::SocketAddr;
use std::process::Command;
use std::time::Instant;

/// iptables rules, in the network namespaces of some pods, dropping every packet to and
/// from one address; taken out again on [`Cut::heal`] or when dropped (a failed test
/// leaves no rule behind).
struct Cut {
    namespaces: Vec<String>,
    meshd: SocketAddr,
    healed: bool,
}

impl Cut {
    /// Cuts the pods whose addresses are `pod_ips` off `meshd`.
    fn make(pod_ips: &[String], meshd: SocketAddr) -> Cut {
        let namespaces = pod_ips.iter().map(|ip| network_namespace_of(ip)).collect();
        let cut = Cut {
            namespaces,
            meshd,
            healed: false,
        };
        cut.rules("-I");
        cut
    }

    fn heal(mut self) {
        self.rules("-D");
        self.healed = true;
    }

    /// `action` (`-I` insert, `-D` delete) on the two rules of each namespace.
    fn rules(&self, action: &str) {
        let (ip, port) = (self.meshd.ip().to_string(), self.meshd.port().to_string());
        for namespace in &self.namespaces {
            for (chain, address, port_match) in
                [("OUTPUT", "-d", "--dport"), ("INPUT", "-s", "--sport")]
            {
                let status = Command::new("ip")
                    .args(["netns", "exec", namespace, "iptables", action, chain])
                    .args([address, &ip, "-p", "tcp", port_match, &port, "-j", "DROP"])
                    .status()
                    .expect("ip netns exec runs");
                assert!(status.success(), "iptables {action} {chain} in {namespace}");
            }
        }
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        if !self.healed {
            self.rules("-D");
        }
    }
}

/// The network namespace (under /var/run/netns) whose interface holds `ip`.
fn network_namespace_of(ip: &str) -> String {
    let listed = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout).to_string();
    let names = listed.lines().filter_map(|l| l.split_whitespace().next());
    for name in names {
        let addresses = Command::new("ip")
            .args(["-n", name, "-4", "-o", "addr", "show"])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&addresses.stdout).contains(&format!("inet {ip}/")) {
            return name.to_string();
        }
    }
    panic!("no network namespace holds {ip}:\n{listed}");
}

/// A response header a VirtualService adds to reviews' answers, to see a change arrive.
fn tagged_reviews(value: &str) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews}}
spec:
  hosts: [reviews]
  http:
  - route: [{{destination: {{host: reviews}}}}]
    headers: {{response: {{set: {{x-partition: {value}}}}}}}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_between_pods_and_meshd() {
    let _alone = ALONE.lock().await;
    let cluster = start_cluster();
    let client = cluster.client().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let meshd = start_meshd(&cluster, dir.path()).await;
    install(&cluster, &meshd, false).await;
    let (namespace, s) = InNamespace::create(&cluster, "partition").await;
    s.inject();
    s.apply(&reviews_with_budget());
    s.apply(&tagged_reviews("before"));
    s.rolled_out("reviews");
    let reviews = ServiceAddress::of(&cluster, &s.namespace, "reviews", 9080);
    s.apply(&load_deployment("load", &reviews, "", true));
    s.rolled_out("load");
    let requests = RequestLog::follow(&client, &s.namespace, "app=load", "load");
    requests.flows(20, "before the partition").await;
    let headers = format!(
        "curl -s -o /dev/null -D - --resolve {host}:9080:{ip} http://{host}:9080/",
        host = reviews.host,
        ip = reviews.ip
    );
    let tag = format!("{headers} | tr -d '\\r' | grep '^x-partition:' || true");

    s.until_in("load", "the first tag", &tag, |r| {
        r.as_deref().map(str::trim) == Ok("x-partition: before")
    })
    .await
    .unwrap_or_else(|last| panic!("{last}; headers: {:?}", s.run_in("load", &headers)));

    // Every pod of the namespace (both reviews and the load's) cut off meshd's xDS port.
    let meshd_address = meshd.xds_tls_address();
    assert_eq!(meshd_address.ip().to_string(), NODE_IP);
    let all = pods(&client, &s.namespace, "").await;
    let cut = Cut::make(&all.iter().map(pod_ip).collect::<Vec<_>>(), meshd_address);
    // A change meshd cannot deliver until it heals.
    s.apply(&tagged_reviews("after"));
    let during_from = requests.succeeded();
    tokio::time::sleep(PARTITION).await;
    let during = requests.succeeded() - during_from;
    assert_eq!(
        s.run_in("load", &tag).unwrap().trim(),
        "x-partition: before",
        "nothing from meshd crossed the partition"
    );

    let pushes_before = pushes(meshd.http_address()).await;
    let healed = Instant::now();
    cut.heal();
    s.until_in("load", "the change made meanwhile", &tag, |r| {
        r.as_deref().map(str::trim) == Ok("x-partition: after")
    })
    .await
    .unwrap();
    let arrived = healed.elapsed();
    let pushed = pushes(meshd.http_address()).await - pushes_before;
    println!(
        "partition of {PARTITION:?} in the pods' network namespaces: {during} requests \
         succeeded meanwhile; healed, the change made meanwhile arrived in {arrived:?}, \
         with {pushed} pushes"
    );
    assert!(during > 0, "traffic flowed during the partition");
    requests.assert_none_failed();
    // Each of the 3 proxies: its types again after reconnecting, and the change.
    assert!(pushed <= (all.len() * 4 * 2) as f64, "{pushed} pushes");
    let restarts = restarted(&pods(&client, &s.namespace, "").await);
    assert!(restarts.is_empty(), "{restarts:?}");
    namespace.delete().await.ok();
    meshd.shutdown().await;
    cluster.stop().expect("the node stops");
}
