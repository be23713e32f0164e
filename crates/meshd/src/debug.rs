//! The JSON of istiod's debug endpoints, built from the registry.

use fleetmesh_server::ProxyStatus;
use fleetmesh_xds::json::any_to_json;
use fleetmesh_xds::{CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE};
use serde_json::{Value, json};

/// `/debug/syncz`: each proxy with, per type, the version sent, the version ACKed and
/// the last NACK.
pub fn syncz(statuses: &[ProxyStatus]) -> Value {
    let proxies: Vec<Value> = statuses
        .iter()
        .map(|s| {
            let mut entry = json!({
                "proxy": s.proxy_id,
                "proxy_version": s.proxy_version,
                "revision": s.revision,
                "protocol": s.protocol,
            });
            for (short, name) in [
                ("cds", "cluster"),
                ("eds", "endpoint"),
                ("lds", "listener"),
                ("rds", "route"),
            ] {
                let t = s.types.get(short).cloned().unwrap_or_default();
                entry[format!("{name}_sent")] = t.sent_version.into();
                entry[format!("{name}_acked")] = t.acked_version.into();
                entry[format!("{name}_nack")] = t.last_nack.map_or(Value::Null, Value::from);
            }
            entry
        })
        .collect();
    Value::Array(proxies)
}

/// `/debug/config_dump?proxyID=`: what meshd serves that proxy, in Envoy's ConfigDump shape.
pub fn config_dump(status: &ProxyStatus) -> Value {
    let resources = |type_url: &str| -> Vec<Value> {
        status
            .resources
            .of_type(type_url)
            .map(|t| t.iter().map(|(_, e)| any_to_json(&e.resource())).collect())
            .unwrap_or_default()
    };
    let version = |type_url: &str| {
        status
            .resources
            .of_type(type_url)
            .map(|t| t.version.clone())
            .unwrap_or_default()
    };
    json!({ "configs": [
        {
            "@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
            "dynamic_active_clusters": resources(CLUSTER_TYPE).into_iter().map(|c| json!({"version_info": version(CLUSTER_TYPE), "cluster": c})).collect::<Vec<_>>(),
        },
        {
            "@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
            "dynamic_listeners": resources(LISTENER_TYPE).into_iter().map(|l| json!({"name": l["name"], "active_state": {"version_info": version(LISTENER_TYPE), "listener": l}})).collect::<Vec<_>>(),
        },
        {
            "@type": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
            "dynamic_route_configs": resources(ROUTE_TYPE).into_iter().map(|r| json!({"version_info": version(ROUTE_TYPE), "route_config": r})).collect::<Vec<_>>(),
        },
        {
            "@type": "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump",
            "dynamic_endpoint_configs": resources(ENDPOINT_TYPE).into_iter().map(|e| json!({"version_info": version(ENDPOINT_TYPE), "endpoint_config": e})).collect::<Vec<_>>(),
        },
    ]})
}
