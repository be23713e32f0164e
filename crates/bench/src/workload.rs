//! The mesh both control planes serve: M services × K endpoints in S namespaces, a
//! VirtualService and a DestinationRule for every tenth service, all in the benchmark's
//! local cluster (kwok pods: they have IPs in the API and nowhere else; nothing ever sends
//! them a packet).

use anyhow::Context;
use fleetmesh_kube::apply::{Applier, documents};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::{Duration, Instant};

pub const FIELD_MANAGER: &str = "fleetmesh-bench";
/// Every object the benchmark makes carries this label.
pub const LABEL: &str = "fleetmesh.io/bench";

#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub services: usize,
    pub endpoints: usize,
    pub namespaces: usize,
    /// One VirtualService and one DestinationRule per this many services.
    pub routes_every: usize,
}

impl Shape {
    pub fn namespace(&self, service: usize) -> String {
        format!("bench-{}", service % self.namespaces)
    }

    /// The name sidecars call service `service` by.
    pub fn host(&self, service: usize) -> String {
        format!(
            "svc-{service}.{}.svc.cluster.local",
            self.namespace(service)
        )
    }

    pub fn pods(&self) -> usize {
        self.services * self.endpoints
    }

    /// The objects, as YAML: namespaces first.
    pub fn manifests(&self) -> (String, String) {
        let mut namespaces = String::new();
        for n in 0..self.namespaces {
            let _ = write!(
                namespaces,
                "---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: bench-{n}, labels: {{{LABEL}: \"true\"}}}}\n"
            );
        }
        let mut objects = String::new();
        for s in 0..self.services {
            let ns = self.namespace(s);
            let _ = write!(
                objects,
                r#"---
apiVersion: v1
kind: Service
metadata: {{name: svc-{s}, namespace: {ns}, labels: {{{LABEL}: "true"}}}}
spec:
  selector: {{app: svc-{s}}}
  ports: [{{name: http, port: 8080, targetPort: 8080}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: svc-{s}, namespace: {ns}, labels: {{{LABEL}: "true"}}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: svc-{s}}}}}
  template:
    metadata: {{labels: {{app: svc-{s}, version: v1}}}}
    spec:
      containers: [{{name: app, image: localhost/bench-app:1, ports: [{{containerPort: 8080}}]}}]
"#,
                replicas = self.endpoints
            );
            if s % self.routes_every == 0 {
                let _ = write!(objects, "{}", virtual_service(s, &ns, "initial"));
                let _ = write!(
                    objects,
                    r#"---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: svc-{s}, namespace: {ns}}}
spec:
  host: svc-{s}.{ns}.svc.cluster.local
  trafficPolicy:
    connectionPool: {{http: {{http1MaxPendingRequests: 100}}}}
    outlierDetection: {{consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s}}
"#
                );
            }
        }
        (namespaces, objects)
    }
}

/// The VirtualService of service `s`; `marker` is the header value its first route
/// matches, which a route change replaces.
fn virtual_service(s: usize, ns: &str, marker: &str) -> String {
    format!(
        r#"---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: svc-{s}, namespace: {ns}}}
spec:
  hosts: [svc-{s}.{ns}.svc.cluster.local]
  http:
  - match: [{{headers: {{x-bench: {{exact: {marker}}}}}}}]
    route: [{{destination: {{host: svc-{s}.{ns}.svc.cluster.local}}}}]
    timeout: 3s
  - route: [{{destination: {{host: svc-{s}.{ns}.svc.cluster.local}}}}]
"#
    )
}

/// Applies every document of `yaml`, several at a time.
async fn apply_all(applier: &Applier, yaml: &str, what: &str) -> anyhow::Result<()> {
    let objects = documents(yaml)?;
    let total = objects.len();
    let started = Instant::now();
    futures::stream::iter(objects.iter().map(|o| applier.apply(o, None)))
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await
        .with_context(|| format!("applying the {what}"))?;
    eprintln!(
        "  applied {total} {what} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Creates the workload (idempotent) and waits until every pod is Ready.
pub async fn create(client: &Client, shape: &Shape, istio_crds: &str) -> anyhow::Result<()> {
    let mut applier = Applier::new(client.clone(), FIELD_MANAGER).await?;
    apply_all(&applier, istio_crds, "Istio CRDs").await?;
    let crd_names = documents(istio_crds)?
        .into_iter()
        .filter_map(|d| d.metadata.name)
        .collect::<Vec<_>>();
    fleetmesh_kube::apply::wait_established(client, crd_names, Duration::from_secs(60)).await?;
    applier.rediscover().await?;
    let (namespaces, objects) = shape.manifests();
    apply_all(
        &applier,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: istio-system}\n",
        "control plane namespace",
    )
    .await?;
    apply_all(&applier, &namespaces, "namespaces").await?;
    apply_all(&applier, &objects, "services, deployments and routes").await?;
    wait_ready(client, shape.pods()).await
}

async fn wait_ready(client: &Client, pods: usize) -> anyhow::Result<()> {
    let deployments: Api<Deployment> = Api::all(client.clone());
    let started = Instant::now();
    let mut last = usize::MAX;
    loop {
        let list = deployments
            .list(&ListParams::default().labels(&format!("{LABEL}=true")))
            .await?;
        let ready: usize = list
            .items
            .iter()
            .filter_map(|d| d.status.as_ref()?.ready_replicas)
            .map(|r| r as usize)
            .sum();
        if ready >= pods {
            eprintln!(
                "  {pods} pods ready after {:.0} s",
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if ready != last {
            eprintln!("  {ready}/{pods} pods ready");
            last = ready;
        }
        if started.elapsed() > Duration::from_secs(900) {
            anyhow::bail!("only {ready} of {pods} pods became ready in 15 minutes");
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
}

/// A workload pod a sidecar can impersonate.
#[derive(Debug, Clone)]
pub struct PodIdentity {
    pub name: String,
    pub namespace: String,
    pub ip: String,
    pub service_account: String,
    pub labels: BTreeMap<String, String>,
}

pub async fn pods(client: &Client) -> anyhow::Result<Vec<PodIdentity>> {
    let api: Api<Pod> = Api::all(client.clone());
    let list = api
        .list(&ListParams::default().labels("app,version=v1"))
        .await?;
    let mut pods: Vec<PodIdentity> = list
        .items
        .into_iter()
        .filter(|p| {
            p.metadata
                .namespace
                .as_deref()
                .is_some_and(|n| n.starts_with("bench-"))
        })
        .filter_map(|p| {
            Some(PodIdentity {
                name: p.metadata.name?,
                namespace: p.metadata.namespace?,
                ip: p.status?.pod_ip?,
                service_account: p
                    .spec
                    .and_then(|s| s.service_account_name)
                    .unwrap_or_else(|| "default".into()),
                labels: p.metadata.labels.unwrap_or_default(),
            })
        })
        .collect();
    pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Ok(pods)
}

/// Edits service 0's VirtualService so its first route matches `marker`; returns when
/// the edit was sent (the API server commits it during that request).
pub async fn change_route(client: &Client, shape: &Shape, marker: &str) -> anyhow::Result<Instant> {
    let gvk = kube::core::GroupVersionKind::gvk("networking.istio.io", "v1", "VirtualService");
    let resource = kube::discovery::ApiResource::from_gvk(&gvk);
    let api: Api<kube::core::DynamicObject> =
        Api::namespaced_with(client.clone(), &shape.namespace(0), &resource);
    let edited = documents(&virtual_service(0, &shape.namespace(0), marker))?;
    let edited = edited.first().context("the VirtualService document")?;
    let sent = Instant::now();
    api.patch(
        "svc-0",
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(edited),
    )
    .await
    .context("editing VirtualService svc-0")?;
    Ok(sent)
}

/// Sets the replicas of service `s`'s Deployment.
pub async fn scale(
    client: &Client,
    shape: &Shape,
    s: usize,
    replicas: usize,
) -> anyhow::Result<()> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), &shape.namespace(s));
    let patch = serde_json::json!({"spec": {"replicas": replicas}});
    api.patch_scale(
        &format!("svc-{s}"),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .with_context(|| format!("scaling svc-{s}"))?;
    Ok(())
}

/// Namespace-scoped Sidecar resources (each namespace sees itself and istio-system), as
/// Istio recommends for large meshes; `false` removes them.
pub async fn scope_sidecars(client: &Client, shape: &Shape, scoped: bool) -> anyhow::Result<()> {
    let mut yaml = String::new();
    for n in 0..shape.namespaces {
        let _ = write!(
            yaml,
            "---\napiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: default, namespace: bench-{n}}}\nspec:\n  egress: [{{hosts: [\"./*\", \"istio-system/*\"]}}]\n"
        );
    }
    if scoped {
        let applier = Applier::new(client.clone(), FIELD_MANAGER).await?;
        return apply_all(&applier, &yaml, "Sidecar resources").await;
    }
    let gvk = kube::core::GroupVersionKind::gvk("networking.istio.io", "v1", "Sidecar");
    let resource = kube::discovery::ApiResource::from_gvk(&gvk);
    for n in 0..shape.namespaces {
        let api: Api<kube::core::DynamicObject> =
            Api::namespaced_with(client.clone(), &format!("bench-{n}"), &resource);
        match api.delete("default", &Default::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Watches the workload's EndpointSlices and reports each address that becomes ready in a
/// slice (after the initial list), with when the API server showed it. kwok hands a freed
/// address to the next pod, so "new" means new to its slice, not never seen.
pub fn watch_new_endpoints(
    client: &Client,
) -> tokio::sync::mpsc::UnboundedReceiver<(String, Instant)> {
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use kube::runtime::watcher::{self, Event};
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let api: Api<EndpointSlice> = Api::all(client.clone());
    tokio::spawn(async move {
        let mut ready_in: std::collections::HashMap<
            (String, String),
            std::collections::HashSet<String>,
        > = Default::default();
        let mut listed = false;
        let mut events = std::pin::pin!(watcher::watcher(api, watcher::Config::default()));
        while let Some(event) = events.next().await {
            let (slice, announce) = match event {
                Ok(Event::Apply(slice)) => (slice, listed),
                Ok(Event::InitApply(slice)) => (slice, false),
                Ok(Event::InitDone) => {
                    listed = true;
                    continue;
                }
                Ok(Event::Delete(slice)) => {
                    ready_in.remove(&(
                        slice.metadata.namespace.unwrap_or_default(),
                        slice.metadata.name.unwrap_or_default(),
                    ));
                    continue;
                }
                _ => continue,
            };
            if !slice
                .metadata
                .namespace
                .as_deref()
                .is_some_and(|n| n.starts_with("bench-"))
            {
                continue;
            }
            let ready: std::collections::HashSet<String> = slice
                .endpoints
                .iter()
                .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false))
                .flat_map(|e| e.addresses.iter().cloned())
                .collect();
            let key = (
                slice.metadata.namespace.clone().unwrap_or_default(),
                slice.metadata.name.clone().unwrap_or_default(),
            );
            let before = ready_in.insert(key, ready.clone()).unwrap_or_default();
            if !announce {
                continue;
            }
            for address in ready.difference(&before) {
                if tx.send((address.clone(), Instant::now())).is_err() {
                    return;
                }
            }
        }
    });
    rx
}
