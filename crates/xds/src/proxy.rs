//! Who is asking: a proxy, from the node id and metadata Istio's agent sends.

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use std::collections::BTreeMap;

/// What a proxy is, from its node id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProxyKind {
    /// Beside a workload (`sidecar~...`).
    Sidecar,
    /// A gateway (`router~...`).
    Router,
}

/// How traffic reaches the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Interception {
    /// No capture (Istio's `captureMode: NONE`): listeners bind the workload's own address;
    /// the app uses the outbound listener as an HTTP proxy. Local mode.
    None,
    /// iptables redirect to 15001/15006, as in a Kubernetes pod.
    Redirect,
}

/// A connected proxy, as its node says it is (see [`Proxy::resolved`] for what the mesh
/// knows of it).
#[derive(Debug, Clone, PartialEq)]
pub struct Proxy {
    /// Its node id, `TYPE~IP~POD.NAMESPACE~DOMAIN`.
    pub id: String,
    /// Sidecar or gateway.
    pub kind: ProxyKind,
    /// Its addresses (`INSTANCE_IPS`, else the node id's): a Pod is this proxy's only if
    /// its IP is one; the first is where it binds (see [`Proxy::ip`]).
    pub ips: Vec<String>,
    /// Its Pod's name.
    pub pod_name: String,
    /// Its namespace.
    pub namespace: String,
    /// Its workload's labels.
    pub labels: BTreeMap<String, String>,
    /// Its workload's service account (`default` when unnamed).
    pub service_account: String,
    /// Its Istio version (`ISTIO_VERSION`).
    pub istio_version: String,
    /// The cluster it runs in (`CLUSTER_ID`).
    pub cluster_id: String,
    /// The mesh it belongs to (`MESH_ID`).
    pub mesh_id: String,
    /// How traffic reaches it.
    pub interception: Interception,
    /// Where it runs (`region/zone/subzone`): its node's locality, else (see
    /// [`Proxy::resolved`]) its pod's endpoint's.
    pub locality: Option<String>,
    /// Fetches its outbound virtual hosts as it first calls them (VHDS on demand) instead
    /// of holding the whole mesh's. Never read from the node: the server sets it for a
    /// delta stream of a mesh that opted in (VHDS exists only in delta xDS).
    pub on_demand: bool,
    /// Istio's agent answers its pod's DNS (metadata `DNS_CAPTURE: "true"`) and asks for
    /// a name table (NDS).
    pub dns_capture: bool,
}

/// Everything about a proxy that translation reads. Proxies with equal keys get identical
/// resources from a snapshot, so they share one generated copy.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConfigKey {
    kind: ProxyKind,
    namespace: String,
    labels: BTreeMap<String, String>,
    service_account: String,
    bind_address: String,
    interception: Interception,
    on_demand: bool,
    dns_capture: bool,
}

impl Proxy {
    /// What its own part of the config depends on (see [`ConfigKey`]).
    pub fn config_key(&self) -> ConfigKey {
        ConfigKey {
            kind: self.kind,
            namespace: self.namespace.clone(),
            labels: self.labels.clone(),
            service_account: self.service_account.clone(),
            bind_address: self.bind_address().to_string(),
            interception: self.interception,
            on_demand: self.on_demand,
            dns_capture: self.dns_capture,
        }
    }

    /// Reads a node as Istio's agent fills it: id `TYPE~IP~POD.NS~NS.svc.DOMAIN` and
    /// metadata `NAMESPACE`, `LABELS`, `SERVICE_ACCOUNT`, `ISTIO_VERSION`, `CLUSTER_ID`,
    /// `MESH_ID`, `INSTANCE_IPS`, `INTERCEPTION_MODE`, `DNS_CAPTURE`.
    pub fn from_node(node: &Node) -> Result<Proxy, NodeError> {
        let parts: Vec<&str> = node.id.split('~').collect();
        let [kind, ip, pod, domain] = parts[..] else {
            return Err(NodeError::Id(node.id.clone()));
        };
        let kind = match kind {
            "sidecar" => ProxyKind::Sidecar,
            "router" => ProxyKind::Router,
            other => return Err(NodeError::Type(other.to_string())),
        };
        let empty = Struct::default();
        let meta = node.metadata.as_ref().unwrap_or(&empty);
        let text = |key: &str| match meta.fields.get(key).and_then(|v| v.kind.as_ref()) {
            Some(Kind::StringValue(s)) => Some(s.clone()),
            _ => None,
        };
        let (pod_name, pod_namespace) = pod.split_once('.').unwrap_or((pod, ""));
        let namespace = text("NAMESPACE")
            .or_else(|| Some(pod_namespace.to_string()).filter(|s| !s.is_empty()))
            .or_else(|| domain.split('.').next().map(str::to_string))
            .unwrap_or_default();
        if namespace.is_empty() {
            return Err(NodeError::NoNamespace(node.id.clone()));
        }
        let mut ips: Vec<String> = text("INSTANCE_IPS")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        if ips.is_empty() {
            ips.push(ip.to_string());
        }
        let interception = match text("INTERCEPTION_MODE").as_deref() {
            Some("NONE") => Interception::None,
            _ => Interception::Redirect,
        };
        Ok(Proxy {
            id: node.id.clone(),
            kind,
            ips,
            pod_name: pod_name.to_string(),
            namespace,
            labels: string_map(meta.fields.get("LABELS")),
            service_account: text("SERVICE_ACCOUNT").unwrap_or_else(|| "default".to_string()),
            istio_version: text("ISTIO_VERSION").unwrap_or_default(),
            cluster_id: text("CLUSTER_ID").unwrap_or_default(),
            mesh_id: text("MESH_ID").unwrap_or_default(),
            interception,
            locality: node
                .locality
                .as_ref()
                .filter(|l| !l.region.is_empty())
                .map(|l| format!("{}/{}/{}", l.region, l.zone, l.sub_zone)),
            on_demand: false,
            dns_capture: kind == ProxyKind::Sidecar
                && text("DNS_CAPTURE").as_deref() == Some("true"),
        })
    }

    /// The workload a source knows for this proxy: the Pod named by its node id, in its
    /// namespace, as istiod finds it, when the Pod's IP (once it has one) is among the
    /// proxy's addresses. A proxy elsewhere that claims a Pod's name is not its proxy.
    pub fn workload<'a>(
        &self,
        snapshot: &'a fleetmesh_model::Snapshot,
    ) -> Result<Option<&'a fleetmesh_model::Workload>, &'a fleetmesh_model::Workload> {
        let key = (self.namespace.clone(), self.pod_name.clone());
        match snapshot.workloads.get(&key) {
            Some(w) if w.ip.as_ref().is_some_and(|ip| !self.ips.contains(ip)) => Err(w),
            found => Ok(found),
        }
    }

    /// The proxy as the mesh knows it: when a source knows its workload (see
    /// [`Proxy::workload`]), that workload's labels and service account replace what the
    /// node metadata claims.
    pub fn resolved(&self, snapshot: &fleetmesh_model::Snapshot) -> Proxy {
        let mut proxy = self.clone();
        if let Ok(Some(workload)) = self.workload(snapshot) {
            proxy.labels = workload.labels.clone();
            if let Some(account) = &workload.service_account {
                proxy.service_account = account.clone();
            }
        }
        if proxy.locality.is_none() {
            proxy.locality = snapshot.locality_of(self.ip()).map(str::to_string);
        }
        proxy
    }

    /// The workload address: the first of its addresses.
    pub fn ip(&self) -> &str {
        self.ips.first().map_or("", String::as_str)
    }

    /// Where this proxy's listeners bind: its own address without capture, else any.
    pub fn bind_address(&self) -> &str {
        match self.interception {
            Interception::None => self.ip(),
            Interception::Redirect => "0.0.0.0",
        }
    }
}

/// A node a proxy sent that does not say what the proxy is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    /// The node id has not the four parts.
    #[error("node id {0:?} is not TYPE~IP~POD.NAMESPACE~DOMAIN")]
    Id(String),
    /// The node id's type is neither `sidecar` nor `router`.
    #[error("node type {0:?} is not sidecar or router")]
    Type(String),
    /// Neither the metadata nor the id names a namespace.
    #[error("node {0:?} names no namespace (metadata NAMESPACE)")]
    NoNamespace(String),
}

fn string_map(value: Option<&Value>) -> BTreeMap<String, String> {
    let Some(Kind::StructValue(s)) = value.and_then(|v| v.kind.as_ref()) else {
        return BTreeMap::new();
    };
    s.fields
        .iter()
        .filter_map(|(k, v)| match &v.kind {
            Some(Kind::StringValue(s)) => Some((k.clone(), s.clone())),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(s: &str) -> Value {
        Value {
            kind: Some(Kind::StringValue(s.into())),
        }
    }

    #[test]
    fn reads_istio_node_metadata() {
        let labels = Struct {
            fields: [("app".to_string(), string("reviews"))].into(),
        };
        let node = Node {
            id: "sidecar~10.0.0.7~reviews-v1-abc.shop~shop.svc.cluster.local".into(),
            metadata: Some(Struct {
                fields: [
                    ("NAMESPACE".to_string(), string("shop")),
                    (
                        "LABELS".to_string(),
                        Value {
                            kind: Some(Kind::StructValue(labels)),
                        },
                    ),
                    ("SERVICE_ACCOUNT".to_string(), string("reviews")),
                    ("ISTIO_VERSION".to_string(), string("1.28.0")),
                    ("INTERCEPTION_MODE".to_string(), string("NONE")),
                ]
                .into(),
            }),
            ..Node::default()
        };
        let proxy = Proxy::from_node(&node).unwrap();
        assert_eq!(proxy.kind, ProxyKind::Sidecar);
        assert_eq!(proxy.ip(), "10.0.0.7");
        assert_eq!(proxy.pod_name, "reviews-v1-abc");
        assert_eq!(proxy.namespace, "shop");
        assert_eq!(proxy.labels["app"], "reviews");
        assert_eq!(proxy.service_account, "reviews");
        assert_eq!(proxy.interception, Interception::None);
        assert_eq!(proxy.bind_address(), "10.0.0.7");
    }

    #[test]
    fn a_pod_is_a_proxys_only_at_the_pods_address() {
        use fleetmesh_model::{Snapshot, Workload};
        let node = |ips: &str| Node {
            id: "sidecar~127.0.0.9~reviews-1.shop~shop.svc.cluster.local".into(),
            metadata: Some(Struct {
                fields: [("INSTANCE_IPS".to_string(), string(ips))].into(),
            }),
            ..Node::default()
        };
        let mut snapshot = Snapshot::default();
        let pod = Workload {
            namespace: "shop".into(),
            name: "reviews-1".into(),
            ip: Some("10.1.0.4".into()),
            labels: [("app".to_string(), "reviews".to_string())].into(),
            service_account: Some("reviews".into()),
        };
        snapshot
            .workloads
            .insert(("shop".into(), "reviews-1".into()), pod.clone());

        let at_the_pod = Proxy::from_node(&node("127.0.0.9, 10.1.0.4")).unwrap();
        assert_eq!(
            at_the_pod.ip(),
            "127.0.0.9",
            "the first address is where it binds"
        );
        assert_eq!(at_the_pod.workload(&snapshot), Ok(Some(&pod)));
        assert_eq!(at_the_pod.resolved(&snapshot).service_account, "reviews");

        let elsewhere = Proxy::from_node(&node("127.0.0.9")).unwrap();
        assert_eq!(elsewhere.workload(&snapshot), Err(&pod));
        assert_eq!(elsewhere.resolved(&snapshot).service_account, "default");

        // A Pod without an IP yet is matched by name alone.
        snapshot.workloads.values_mut().for_each(|w| w.ip = None);
        assert!(matches!(elsewhere.workload(&snapshot), Ok(Some(_))));
    }

    #[test]
    fn rejects_malformed_ids() {
        for id in ["", "sidecar", "waypoint~1~a.b~b.svc", "sidecar~1~a~"] {
            let node = Node {
                id: id.into(),
                ..Node::default()
            };
            assert!(Proxy::from_node(&node).is_err(), "{id}");
        }
    }
}
