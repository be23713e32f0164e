//! NDS: the name table Istio's agent answers DNS from when its pod has DNS capture on
//! (`ISTIO_META_DNS_CAPTURE=true`). The agent asks for it on its ADS stream and does not
//! call itself ready until it has one, so a proxy that asks gets a table even when the
//! mesh has no service yet.
//!
//! What it holds, as istiod builds it: every service the proxy can see (its Sidecar's
//! egress hosts, `exportTo`) that has virtual IPs, under its host name, with the
//! Kubernetes short name and namespace for Services so that `reviews` and
//! `reviews.default` resolve too. Names the table does not hold (wildcard hosts,
//! headless Services, ServiceEntries without `addresses`) the agent forwards to the
//! pod's own resolver, which answers them as it would without capture.

use crate::ProxyKind;
use crate::scope::Scope;
use crate::{NamedResource, pack};
use fleetmesh_model::Service;
use fleetmesh_model::host::service_hostname;
use std::collections::HashMap;

/// The type URL Istio's agent asks for it by.
pub const NAME_TABLE_TYPE: &str = "type.googleapis.com/istio.networking.nds.v1.NameTable";

/// The one resource's name (the agent reads the table, not its name).
pub const NAME: &str = "name-table";

/// `istio.networking.nds.v1.NameTable` (istio.io/istio `pkg/dns/proto/nds.proto`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct NameTable {
    /// Host name → what it resolves to.
    #[prost(map = "string, message", tag = "1")]
    pub table: HashMap<String, NameInfo>,
}

/// `NameTable.NameInfo`: one host name's addresses and, for a Kubernetes Service, its
/// short name and namespace.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NameInfo {
    /// The addresses the name resolves to.
    #[prost(string, repeated, tag = "1")]
    pub ips: Vec<String>,
    /// `Kubernetes` or `External`: where the service is defined.
    #[prost(string, tag = "2")]
    pub registry: String,
    /// A Kubernetes Service's name.
    #[prost(string, tag = "3")]
    pub shortname: String,
    /// A Kubernetes Service's namespace.
    #[prost(string, tag = "4")]
    pub namespace: String,
}

impl prost::Name for NameTable {
    const NAME: &'static str = "NameTable";
    const PACKAGE: &'static str = "istio.networking.nds.v1";

    fn type_url() -> String {
        NAME_TABLE_TYPE.to_string()
    }
}

/// The name table of a sidecar with DNS capture; nothing for any other proxy.
pub fn build(scope: &Scope) -> Vec<NamedResource> {
    if !scope.proxy.dns_capture || scope.proxy.kind != ProxyKind::Sidecar {
        return Vec::new();
    }
    let table = scope
        .services
        .iter()
        .filter_map(|service| Some((service.hostname.clone(), name_info(scope, service)?)))
        .collect();
    vec![NamedResource {
        name: NAME.to_string(),
        resource: pack(NameTable { table }),
    }]
}

fn name_info(scope: &Scope, service: &Service) -> Option<NameInfo> {
    if service.hostname.starts_with('*') || service.addresses.is_empty() {
        return None;
    }
    let ips = service.addresses.iter().map(ToString::to_string).collect();
    let kubernetes = service
        .hostname
        .split_once('.')
        .filter(|(name, _)| {
            service.hostname == service_hostname(name, &service.namespace, &scope.snapshot.domain)
        })
        .map(|(name, _)| name.to_string());
    Some(match kubernetes {
        Some(shortname) => NameInfo {
            ips,
            registry: "Kubernetes".to_string(),
            shortname,
            namespace: service.namespace.clone(),
        },
        None => NameInfo {
            ips,
            registry: "External".to_string(),
            ..NameInfo::default()
        },
    })
}
