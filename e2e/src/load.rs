//! Steady traffic in real pods, counted by the test: a load Deployment's pods each send
//! one request after another and print every answer's status ([`load_script`]); the
//! test follows every such pod's log from its first line to its last, pods that come
//! and go with rollouts included. A request that fails is a line that is not `200`.
//! Beside it, [`BudgetWatch`] samples a PodDisruptionBudget's health the whole time.

use fleetmesh_kube::reflect::Tasks;
use futures::{AsyncBufReadExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ListParams, LogParams};
use parking_lot::Mutex;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A bash loop GETting `url` (with `curl` options `options`) until SIGTERM, printing for
/// each request its status code (`000` when no answer came), how long it took (and its
/// name lookup and connection), curl's exit code, when it ended, and for an answer other
/// than 200 the start of its body (Envoy says there why it answered itself). It counts
/// from the first 200 on, printing `warmup` lines before (kube-proxy programs a new
/// Service's address a moment after its pods are ready; [`RequestLog`] allows that only
/// to the first pod). SIGTERM ends it after the request in flight, as an app that shuts
/// down cleanly does.
pub fn load_script(url: &str, options: &str) -> String {
    format!(
        "until out=$(curl -s -o /dev/null -m 2 -w '%{{http_code}}' {options} {url}); code=$?; [ \"$out\" = 200 ]; do \
         echo \"warmup $out exit=$code at=$(date +%s.%N)\"; sleep 0.2; done; \
         trap 'stop=1' TERM; stop=0; while [ $stop = 0 ]; do \
         out=$(curl -s -o /tmp/answer -m 5 -w '%{{http_code}} took=%{{time_total}} dns=%{{time_namelookup}} connected=%{{time_connect}}' {options} {url}); \
         code=$?; line=\"$out exit=$code at=$(date +%s.%N)\"; \
         case $out in 200*) echo \"$line\";; \
         *) echo \"$line body=$(head -c 300 /tmp/answer 2>/dev/null | tr '\\n' ' ')\";; esac; \
         sleep 0.05; done"
    )
}

/// `reviews` (two replicas, never fewer than one healthy) and its budget.
pub fn reviews_with_budget() -> String {
    r#"
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews}
spec:
  replicas: 2
  strategy: {rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}
  selector: {matchLabels: {app: reviews}}
  template:
    metadata: {labels: {app: reviews, version: v1}}
    spec:
      terminationGracePeriodSeconds: 10
      containers:
      - name: reviews
        image: SAMPLE_IMAGE
        args: [--listen, "0.0.0.0:9080", --service, reviews, --version, v1]
        readinessProbe: {httpGet: {path: /ready, port: 9080}, periodSeconds: 1}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: reviews}
spec:
  minAvailable: 1
  selector: {matchLabels: {app: reviews}}
"#
    .replace("SAMPLE_IMAGE", &crate::real_node::sample_image())
}

/// Deployment `name` whose pods run [`load_script`] against `service`'s `path` (the
/// Service's name in the URL, its address pinned with `curl --resolve`: the node's DNS,
/// a process sharing the machine's two cores, is not what these suites test); `inject:
/// false` keeps them out of the mesh (a caller from outside).
pub fn load_deployment(
    name: &str,
    service: &ServiceAddress,
    curl_options: &str,
    inject: bool,
) -> String {
    let url = format!("http://{}:{}/", service.host, service.port);
    let curl_options = format!(
        "--resolve {}:{}:{} {curl_options}",
        service.host, service.port, service.ip
    );
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  strategy: {{rollingUpdate: {{maxSurge: 1, maxUnavailable: 0}}}}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}{outside}}}}}
    spec:
      terminationGracePeriodSeconds: 10
      containers:
      - name: load
        image: {image}
        command: [bash, -c, {script}]
"#,
        image = crate::real_node::sample_image(),
        outside = if inject {
            ""
        } else {
            ", sidecar.istio.io/inject: \"false\""
        },
        script = serde_json::to_string(&load_script(&url, &curl_options)).unwrap(),
    )
}

/// A Service as a load pod calls it.
pub struct ServiceAddress {
    /// `NAME.NAMESPACE`, as the URL names it.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// Its cluster IP.
    pub ip: String,
}

impl ServiceAddress {
    /// Service `name` of `namespace`, port `port`, its cluster IP read from the cluster.
    pub fn of(
        cluster: &fleetmesh_kube::testing::TestCluster,
        namespace: &str,
        name: &str,
        port: u16,
    ) -> Self {
        let ip = cluster
            .run_kubectl(
                &[
                    "get",
                    "service",
                    name,
                    "-n",
                    namespace,
                    "-o",
                    "jsonpath={.spec.clusterIP}",
                ],
                None,
            )
            .unwrap_or_else(|e| panic!("Service {namespace}/{name}: {e}"));
        ServiceAddress {
            host: format!("{name}.{namespace}"),
            port,
            ip,
        }
    }
}

/// The status of a line printed before the target first answered.
const WARMUP: &str = "warmup";

/// One answer a load pod printed.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The pod that sent the request.
    pub pod: String,
    /// The status code, as curl printed it.
    pub status: String,
    /// The rest of the line: how long the request took, curl's exit code, when it ended.
    pub detail: String,
}

/// Every answer of every pod of a load Deployment, as they come.
pub struct RequestLog {
    answers: Arc<Mutex<Vec<Answer>>>,
    /// Lists the pods and follows each one's log, until dropped.
    _watcher: Tasks,
}

impl RequestLog {
    /// Follows container `container` of every pod matching `selector` in `namespace`,
    /// those running now and those started later.
    pub fn follow(client: &kube::Client, namespace: &str, selector: &str, container: &str) -> Self {
        let answers = Arc::new(Mutex::new(Vec::new()));
        let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let (selector, container) = (selector.to_string(), container.to_string());
        let collected = answers.clone();
        let watcher = tokio::spawn(async move {
            let mut followed = BTreeSet::new();
            let mut followers = Tasks::default();
            loop {
                if let Ok(list) = pods.list(&ListParams::default().labels(&selector)).await {
                    for name in list.items.into_iter().filter_map(|p| p.metadata.name) {
                        if followed.insert(name.clone()) {
                            let follower = follow_pod(
                                pods.clone(),
                                name,
                                container.clone(),
                                collected.clone(),
                            );
                            followers.extend([tokio::spawn(follower)]);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        RequestLog {
            answers,
            _watcher: Tasks::from(vec![watcher]),
        }
    }

    /// Every answer so far.
    pub fn answers(&self) -> Vec<Answer> {
        self.answers.lock().clone()
    }

    /// How many requests were answered 200 so far.
    pub fn succeeded(&self) -> usize {
        self.answers
            .lock()
            .iter()
            .filter(|a| a.status == "200")
            .count()
    }

    /// The answers that were not 200 (warm-up lines aside).
    pub fn failures(&self) -> Vec<Answer> {
        let answers = self.answers.lock();
        answers
            .iter()
            .filter(|a| a.status != "200" && a.status != WARMUP)
            .cloned()
            .collect()
    }

    /// Each pod's first and last answer, and every failure with the answers around it:
    /// what a failed assertion shows.
    pub fn report(&self) -> String {
        let answers = self.answers.lock();
        let mut report = String::new();
        let mut pods: Vec<&str> = Vec::new();
        for answer in answers.iter() {
            if !pods.contains(&answer.pod.as_str()) {
                pods.push(&answer.pod);
            }
        }
        for pod in pods {
            let of_pod: Vec<&Answer> = answers.iter().filter(|a| a.pod == pod).collect();
            report += &format!(
                "{pod}: {} answers, first {:?}, last {:?}\n",
                of_pod.len(),
                of_pod.first().map(|a| &a.detail),
                of_pod.last().map(|a| &a.detail)
            );
            let failed = |a: &&&Answer| a.status != "200";
            for (i, failed) in of_pod.iter().enumerate().filter(|(_, a)| failed(a)) {
                for around in &of_pod[i.saturating_sub(2)..(i + 3).min(of_pod.len())] {
                    report += &format!("  {} {}\n", around.status, around.detail);
                }
                report += &format!("  ^ failed: {} {}\n", failed.status, failed.detail);
            }
        }
        report
    }

    /// Fails, showing [`RequestLog::report`], if any request failed, or a pod but the
    /// first needed a warm-up (a later pod's first requests count like any other).
    pub fn assert_none_failed(&self) {
        let failures = self.failures();
        assert!(failures.is_empty(), "failed requests:\n{}", self.report());
        let answers = self.answers.lock();
        let first = answers.first().map(|a| a.pod.clone());
        let late = answers
            .iter()
            .filter(|a| a.status == WARMUP && Some(&a.pod) != first.as_ref())
            .count();
        drop(answers);
        assert_eq!(
            late,
            0,
            "a later pod's first requests failed:\n{}",
            self.report()
        );
    }

    /// Waits until `more` further requests succeeded (traffic still flows), failing after
    /// a minute naming `what`.
    pub async fn flows(&self, more: usize, what: &str) {
        let target = self.succeeded() + more;
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.succeeded() < target {
            assert!(
                Instant::now() < deadline,
                "traffic stopped {what}: {} succeeded, failures {:?}",
                self.succeeded(),
                self.failures()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Reads pod `name`'s log to its end, from the line after the last one read if the
/// stream breaks; waits for the container to start.
async fn follow_pod(
    pods: Api<Pod>,
    name: String,
    container: String,
    answers: Arc<Mutex<Vec<Answer>>>,
) {
    let params = LogParams {
        container: Some(container),
        follow: true,
        ..LogParams::default()
    };
    let mut read = 0usize;
    loop {
        // An error: not started yet, or gone (asked below).
        if let Ok(stream) = pods.log_stream(&name, &params).await {
            let mut lines = stream.lines().skip(read);
            while let Some(Ok(line)) = lines.next().await {
                read += 1;
                let (status, detail) = line.trim().split_once(' ').unwrap_or((line.trim(), ""));
                answers.lock().push(Answer {
                    pod: name.clone(),
                    status: status.to_string(),
                    detail: detail.to_string(),
                });
            }
        }
        match pods.get_opt(&name).await {
            Ok(Some(pod)) if !ended(&pod) => tokio::time::sleep(Duration::from_millis(200)).await,
            _ => return,
        }
    }
}

/// Whether the pod's containers have all stopped for good.
fn ended(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    matches!(phase, Some("Succeeded" | "Failed"))
}

/// Samples a PodDisruptionBudget's status: how often fewer pods were healthy than it
/// demands.
pub struct BudgetWatch {
    lowest: Arc<Mutex<Option<(i32, i32)>>>,
    /// Samples it, until dropped.
    _watcher: Tasks,
}

impl BudgetWatch {
    /// Samples PodDisruptionBudget `name` of `namespace` every 100 ms.
    pub fn start(client: &kube::Client, namespace: &str, name: &str) -> Self {
        let budgets: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), namespace);
        let name = name.to_string();
        let lowest = Arc::new(Mutex::new(None));
        let sampled = lowest.clone();
        let watcher = tokio::spawn(async move {
            loop {
                if let Ok(budget) = budgets.get(&name).await
                    && let Some(status) = budget.status
                {
                    let now = (status.current_healthy, status.desired_healthy);
                    let mut lowest = sampled.lock();
                    if lowest.is_none_or(|(healthy, desired)| now.0 - now.1 < healthy - desired) {
                        *lowest = Some(now);
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        BudgetWatch {
            lowest,
            _watcher: Tasks::from(vec![watcher]),
        }
    }

    /// The sample with the fewest healthy pods above the budget's demand: (healthy,
    /// desired). `None` before the controller first wrote a status.
    pub fn lowest(&self) -> Option<(i32, i32)> {
        *self.lowest.lock()
    }

    /// Fails unless the budget was read and never had fewer healthy pods than it demands.
    pub fn assert_held(&self) {
        let (healthy, desired) = self.lowest().expect("the budget's status was read");
        assert!(
            healthy >= desired,
            "the budget was violated: {healthy} healthy of {desired}"
        );
    }
}
