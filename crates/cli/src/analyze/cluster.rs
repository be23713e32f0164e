//! A live cluster's objects for `analyze`: its Istio objects (each kind whose CRD it
//! serves), read through meshd's own parser and validator; its Services, as Kubernetes
//! already validated them; its Pods' names and labels. Read once with the caller's credentials
//! (list on those kinds, Services and Pods); nothing is written to the cluster.

use super::{INVALID, Message, Objects, selectors};
use anyhow::Context;
use fleetmesh_api::Resource;
use fleetmesh_api::kube::{ServicePort, ServiceSpec, TargetPort};
use fleetmesh_api::meta::ObjectMeta;
use fleetmesh_api::resource::Config;
use fleetmesh_kube::crds::KINDS;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};

impl Objects {
    /// Every namespace's objects of the cluster `client` reaches; `origin` names it in
    /// findings (its kubeconfig context).
    pub async fn from_cluster(client: &kube::Client, origin: &str) -> anyhow::Result<Objects> {
        let mut objects = Objects::default();
        for kind in &KINDS {
            let gvk = GroupVersionKind::gvk(kind.group, kind.versions[0], kind.kind);
            let api_resource = ApiResource::from_gvk_with_plural(&gvk, kind.plural);
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &api_resource);
            let listed = match api.list(&ListParams::default()).await {
                Ok(listed) => listed,
                // The CRD is not installed: the cluster has none of that kind.
                Err(kube::Error::Api(e)) if e.code == 404 => continue,
                Err(e) => return Err(e).with_context(|| format!("listing {}s", kind.kind)),
            };
            for object in listed {
                match kind.load(&object) {
                    Ok(resource) => objects.read.push((resource, origin.to_string())),
                    Err((described, problems)) => {
                        objects
                            .messages
                            .extend(problems.into_iter().map(|text| Message {
                                code: INVALID,
                                resource: described.clone(),
                                origin: origin.to_string(),
                                text,
                            }))
                    }
                }
            }
        }
        let services: Api<Service> = Api::all(client.clone());
        let listed = services.list(&ListParams::default()).await;
        for service in listed.context("listing Services")? {
            objects.read.push((
                Resource::Service(service_config(service)),
                origin.to_string(),
            ));
        }
        let pods: Api<Pod> = Api::all(client.clone());
        let listed = pods.list(&ListParams::default()).await;
        objects.pods = Some(
            listed
                .context("listing Pods")?
                .into_iter()
                .map(|pod| selectors::Pod {
                    namespace: pod.metadata.namespace.unwrap_or_default(),
                    name: pod.metadata.name.unwrap_or_default(),
                    labels: pod.metadata.labels.unwrap_or_default(),
                })
                .collect(),
        );
        Ok(objects)
    }
}

/// The fields of a Service a mesh reads (the host it names, its ports and selector).
fn service_config(service: Service) -> Config<ServiceSpec> {
    let spec = service.spec.unwrap_or_default();
    let ports = spec
        .ports
        .unwrap_or_default()
        .into_iter()
        .map(|p| ServicePort {
            name: p.name,
            port: u32::try_from(p.port).unwrap_or_default(),
            target_port: p.target_port.map(|t| match t {
                IntOrString::Int(n) => TargetPort::Number(u32::try_from(n).unwrap_or_default()),
                IntOrString::String(name) => TargetPort::Name(name),
            }),
            protocol: p.protocol,
            app_protocol: p.app_protocol,
        });
    Config {
        api_version: "v1".into(),
        kind: "Service".into(),
        metadata: ObjectMeta {
            name: service.metadata.name.unwrap_or_default(),
            namespace: service.metadata.namespace.unwrap_or_default(),
            labels: service.metadata.labels.unwrap_or_default(),
            annotations: Default::default(),
        },
        spec: ServiceSpec {
            ports: ports.collect(),
            selector: spec.selector.unwrap_or_default(),
            service_type: spec.type_,
            cluster_ip: spec.cluster_ip,
            session_affinity: spec.session_affinity,
        },
        status: None,
    }
}
