//! One cluster's services as the mesh sees them: Services, their EndpointSlices and the
//! Pods behind them (labels for subsets, service accounts), and where the cluster runs
//! (its endpoints' locality). What meshd reads of a member cluster, and all it reads of a
//! remote cluster named by a remote secret (config comes from each cluster itself).

use crate::reflect::{Tasks, reflect, watch};
use fleetmesh_model::host::{ExportTo, service_hostname};
use fleetmesh_model::service::{
    Endpoint, Labels, Resolution, Service, ServicePort, Workload, virtual_ip,
};
use fleetmesh_model::trigger::{Origin, Trigger};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service as KubeService};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::{Api, Client};
use std::collections::BTreeMap;
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;

const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// What `fleetmesh install` recorded about the cluster, in its root namespace (keys
/// `location`: the region its endpoints' locality starts with; `xdsAddress`, `cluster`,
/// `cniManaged`, `hub`: what `kube-inject` needs to inject as the webhook does).
pub const INSTALL_CONFIG_MAP: &str = "fleetmesh-install";

/// The watches of one cluster's services; they stop when it is dropped.
pub struct ServiceDiscovery {
    cluster_id: String,
    domain: String,
    services: Store<KubeService>,
    slices: Store<EndpointSlice>,
    pods: Store<Pod>,
    /// ConfigMap `fleetmesh-install` of the root namespace.
    install_config: Store<ConfigMap>,
    /// Held for their lifetime: dropping ends them.
    _watches: Tasks,
}

impl ServiceDiscovery {
    /// Starts the watches (they fill in the background; see [`Self::wait_synced`]). Each
    /// event signals `changes`.
    pub fn start(
        client: &Client,
        cluster_id: &str,
        domain: &str,
        mesh_namespace: &str,
        changes: &UnboundedSender<Trigger>,
    ) -> ServiceDiscovery {
        let (services, a) = watch::<KubeService>(
            Api::all(client.clone()),
            (),
            Origin::Services,
            changes.clone(),
        );
        let (slices, b) = watch::<EndpointSlice>(
            Api::all(client.clone()),
            (),
            Origin::Endpoints("EndpointSlice"),
            changes.clone(),
        );
        let (pods, c) = watch::<Pod>(
            Api::all(client.clone()),
            (),
            Origin::Endpoints("Pods"),
            changes.clone(),
        );
        let (install_config, d) = watch_named::<ConfigMap>(
            Api::namespaced(client.clone(), mesh_namespace),
            INSTALL_CONFIG_MAP,
            Origin::Global,
            changes.clone(),
        );
        ServiceDiscovery {
            cluster_id: cluster_id.into(),
            domain: domain.into(),
            services,
            slices,
            pods,
            install_config,
            _watches: vec![a, b, c, d].into(),
        }
    }

    /// Returns once every watch has its first full list.
    pub async fn wait_synced(&self) -> Result<(), reflector::store::WriterDropped> {
        self.services.wait_until_ready().await?;
        self.slices.wait_until_ready().await?;
        self.pods.wait_until_ready().await?;
        self.install_config.wait_until_ready().await
    }

    /// How many Services the cluster has now.
    pub fn service_count(&self) -> usize {
        self.services.state().len()
    }

    /// The cluster's Pods, for matching proxies to what they run in.
    pub fn workloads(&self) -> Vec<Workload> {
        let pods = self.pods.state();
        pods.iter()
            .filter_map(|pod| {
                Some(Workload {
                    namespace: pod.metadata.namespace.clone()?,
                    name: pod.metadata.name.clone()?,
                    ip: pod.status.as_ref().and_then(|s| s.pod_ip.clone()),
                    labels: pod
                        .metadata
                        .labels
                        .clone()
                        .unwrap_or_default()
                        .into_iter()
                        .collect(),
                    service_account: pod
                        .spec
                        .as_ref()
                        .and_then(|s| s.service_account_name.clone()),
                })
            })
            .collect()
    }

    /// The cluster's services, each with the ready endpoints of its EndpointSlices.
    pub fn services(&self) -> Vec<Service> {
        let pods = self.pods.state();
        let pods: BTreeMap<(&str, &str), &Pod> = pods
            .iter()
            .filter_map(|p| {
                let key = (
                    p.metadata.namespace.as_deref()?,
                    p.metadata.name.as_deref()?,
                );
                Some((key, p.as_ref()))
            })
            .collect();
        // Each Service's slices by (namespace, its name), found once, not per Service.
        let slices = self.slices.state();
        let mut slices_of: BTreeMap<(&str, &str), Vec<&EndpointSlice>> = BTreeMap::new();
        for slice in &slices {
            let service = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL));
            if let (Some(namespace), Some(service)) = (&slice.metadata.namespace, service) {
                slices_of
                    .entry((namespace, service))
                    .or_default()
                    .push(slice);
            }
        }
        let region = self.install_config.state().first().and_then(|c| {
            let location = c.data.as_ref()?.get("location")?.trim().to_string();
            (!location.is_empty()).then_some(location)
        });
        self.services
            .state()
            .iter()
            .filter_map(|s| self.service(s, &slices_of, &pods, region.as_deref()))
            .collect()
    }

    fn service(
        &self,
        service: &KubeService,
        slices_of: &BTreeMap<(&str, &str), Vec<&EndpointSlice>>,
        pods: &BTreeMap<(&str, &str), &Pod>,
        region: Option<&str>,
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
                let numeric_target = match &p.target_port {
                    Some(IntOrString::Int(n)) => Some(*n as u32),
                    _ => None,
                };
                ServicePort::kube(
                    p.name.as_deref(),
                    p.port as u32,
                    numeric_target,
                    p.app_protocol.as_deref(),
                )
            })
            .collect();
        let mut endpoints = Vec::new();
        let own_slices = slices_of.get(&(namespace.as_str(), name.as_str()));
        for slice in own_slices.into_iter().flatten() {
            endpoints.extend(self.slice_endpoints(slice, &ports, &namespace, pods, region));
        }
        endpoints.sort_by(|a, b| a.address.cmp(&b.address));
        Some(Service {
            hostname: service_hostname(&name, &namespace, &self.domain),
            namespace,
            addresses: spec
                .cluster_ips
                .iter()
                .flatten()
                .chain(&spec.cluster_ip)
                .filter_map(|ip| virtual_ip(ip))
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect(),
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
            subject_alt_names: Vec::new(),
            address_ranges: Vec::new(),
        })
    }
    /// The ready endpoints of one EndpointSlice of a service with `ports`, with their
    /// Pods' labels and service accounts and their locality.
    fn slice_endpoints(
        &self,
        slice: &EndpointSlice,
        ports: &[ServicePort],
        namespace: &str,
        pods: &BTreeMap<(&str, &str), &Pod>,
        region: Option<&str>,
    ) -> Vec<Endpoint> {
        let mut endpoints = Vec::new();
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
                    let pod_namespace = r.namespace.as_deref().unwrap_or(namespace);
                    pods.get(&(pod_namespace, r.name.as_deref()?))
                });
            let labels: Labels = pod
                .and_then(|p| p.metadata.labels.clone())
                .unwrap_or_default()
                .into_iter()
                .collect();
            let service_account = pod.and_then(|p| p.spec.as_ref()?.service_account_name.clone());
            let workload = pod
                .and_then(|p| p.metadata.name.as_deref())
                .map(|name| fleetmesh_api::peer::workload_name(name, &labels));
            // Istio's region/zone: the region is where install says the cluster runs.
            let locality = match (region, &endpoint.zone) {
                (None, None) => None,
                (region, zone) => Some(format!(
                    "{}/{}",
                    region.unwrap_or_default(),
                    zone.as_deref().unwrap_or_default()
                )),
            };
            for address in &endpoint.addresses {
                endpoints.push(Endpoint {
                    address: address.clone(),
                    ports: port_map.clone(),
                    labels: labels.clone(),
                    locality: locality.clone(),
                    weight: 1,
                    service_account: service_account.clone(),
                    cluster_id: self.cluster_id.clone(),
                    workload: workload.clone(),
                });
            }
        }
        endpoints
    }
}

/// A reflector over the object `name` of `api`; each event signals `changes` as a
/// change of `origin`.
pub(crate) fn watch_named<K>(
    api: Api<K>,
    name: &str,
    origin: Origin,
    changes: UnboundedSender<Trigger>,
) -> (Store<K>, JoinHandle<()>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    reflect(api, (), config, origin, changes)
}
