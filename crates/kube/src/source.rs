//! One Kubernetes cluster as a source of services: Services, their EndpointSlices, and the
//! Pods behind them (labels for subsets, service accounts), watched by kube-rs reflectors.
//! A broken watch (API server restart, 410 Gone) resumes by itself with backoff.

use anyhow::Context;
use fleetmesh_model::host::ExportTo;
use fleetmesh_model::service::{Endpoint, Labels, Protocol, Resolution, Service, ServicePort};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service as KubeService};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;

const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
const SYNC_TIMEOUT: Duration = Duration::from_secs(60);

pub struct ClusterSource {
    cluster_id: String,
    domain: String,
    services: Store<KubeService>,
    slices: Store<EndpointSlice>,
    pods: Store<Pod>,
    watches: Vec<JoinHandle<()>>,
}

impl ClusterSource {
    /// Starts watching; returns once every watch has its first full list. Each event
    /// afterwards signals `changes`.
    pub async fn start(
        client: Client,
        cluster_id: &str,
        domain: &str,
        changes: UnboundedSender<()>,
    ) -> anyhow::Result<ClusterSource> {
        let (services, a) = watch::<KubeService>(client.clone(), changes.clone());
        let (slices, b) = watch::<EndpointSlice>(client.clone(), changes.clone());
        let (pods, c) = watch::<Pod>(client, changes);
        let source = ClusterSource {
            cluster_id: cluster_id.into(),
            domain: domain.into(),
            services,
            slices,
            pods,
            watches: vec![a, b, c],
        };
        let ready = async {
            source.services.wait_until_ready().await?;
            source.slices.wait_until_ready().await?;
            source.pods.wait_until_ready().await
        };
        tokio::time::timeout(SYNC_TIMEOUT, ready)
            .await
            .with_context(|| format!("cluster {cluster_id}: no full list of Services, EndpointSlices and Pods within {SYNC_TIMEOUT:?} (is the API server reachable, and may this identity list them?)"))??;
        tracing::info!(
            cluster = cluster_id,
            services = source.services.state().len(),
            "cluster watches synced"
        );
        Ok(source)
    }

    /// The cluster's services, each with the ready endpoints of its EndpointSlices.
    pub fn services(&self) -> Vec<Service> {
        let pods: BTreeMap<(String, String), std::sync::Arc<Pod>> = self
            .pods
            .state()
            .into_iter()
            .filter_map(|p| Some(((p.metadata.namespace.clone()?, p.metadata.name.clone()?), p)))
            .collect();
        let slices = self.slices.state();
        self.services
            .state()
            .iter()
            .filter_map(|s| self.service(s, &slices, &pods))
            .collect()
    }

    fn service(
        &self,
        service: &KubeService,
        slices: &[std::sync::Arc<EndpointSlice>],
        pods: &BTreeMap<(String, String), std::sync::Arc<Pod>>,
    ) -> Option<Service> {
        let namespace = service.metadata.namespace.clone()?;
        let name = service.metadata.name.clone()?;
        let spec = service.spec.as_ref()?;
        if spec.type_.as_deref() == Some("ExternalName") {
            return None;
        }
        let ports: Vec<ServicePort> = spec
            .ports
            .iter()
            .flatten()
            .map(|p| {
                let port_name = p.name.clone().unwrap_or_default();
                let target_port = match &p.target_port {
                    Some(IntOrString::Int(n)) => *n as u32,
                    _ => p.port as u32,
                };
                let protocol = Protocol::detect(p.app_protocol.as_deref(), &port_name);
                ServicePort {
                    name: port_name,
                    port: p.port as u32,
                    protocol,
                    target_port,
                }
            })
            .collect();
        let mut endpoints = Vec::new();
        let own_slices = slices.iter().filter(|slice| {
            slice.metadata.namespace.as_deref() == Some(&namespace)
                && slice
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(SERVICE_NAME_LABEL))
                    == Some(&name)
        });
        for slice in own_slices {
            // Slice ports are named like the service's ports they serve.
            let slice_ports: BTreeMap<String, u32> = slice
                .ports
                .iter()
                .flatten()
                .filter_map(|p| Some((p.name.clone().unwrap_or_default(), p.port? as u32)))
                .collect();
            let port_map: BTreeMap<u32, u32> = ports
                .iter()
                .filter_map(|p| Some((p.port, *slice_ports.get(&p.name)?)))
                .collect();
            for endpoint in &slice.endpoints {
                if endpoint.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                    continue;
                }
                let pod = endpoint
                    .target_ref
                    .as_ref()
                    .filter(|r| r.kind.as_deref() == Some("Pod"))
                    .and_then(|r| {
                        pods.get(&(
                            r.namespace.clone().unwrap_or_else(|| namespace.clone()),
                            r.name.clone()?,
                        ))
                    });
                let labels: Labels = pod
                    .and_then(|p| p.metadata.labels.clone())
                    .unwrap_or_default()
                    .into_iter()
                    .collect();
                let service_account =
                    pod.and_then(|p| p.spec.as_ref()?.service_account_name.clone());
                for address in &endpoint.addresses {
                    endpoints.push(Endpoint {
                        address: address.clone(),
                        ports: port_map.clone(),
                        labels: labels.clone(),
                        locality: endpoint.zone.clone(),
                        weight: 1,
                        service_account: service_account.clone(),
                        cluster_id: self.cluster_id.clone(),
                    });
                }
            }
        }
        endpoints.sort_by(|a, b| a.address.cmp(&b.address));
        Some(Service {
            hostname: format!("{name}.{namespace}.svc.{}", self.domain),
            namespace,
            ports,
            endpoints,
            export_to: ExportTo::All,
            selector: spec
                .selector
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect(),
            resolution: Resolution::Static,
            mesh_external: false,
        })
    }
}

impl Drop for ClusterSource {
    fn drop(&mut self) {
        for watch in &self.watches {
            watch.abort();
        }
    }
}

/// A reflector for every `K` in the cluster; each event signals `changes`.
fn watch<K>(client: Client, changes: UnboundedSender<()>) -> (Store<K>, JoinHandle<()>)
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store::<K>();
    let stream = reflector::reflector(
        writer,
        watcher(Api::<K>::all(client), watcher::Config::default()),
    )
    .default_backoff();
    let task = tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => {
                    let _ = changes.send(());
                }
                Err(e) => {
                    tracing::warn!(kind = %K::kind(&()), error = %e, "watch failed; retrying with backoff")
                }
            }
        }
    });
    (store, task)
}
