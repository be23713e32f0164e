//! The JSON of istiod's debug endpoints, built from the registry.

use fleetmesh_server::ProxyStatus;
use fleetmesh_xds::ResourceType::{self, Cluster, Endpoint, Listener, Route, Secret};
use fleetmesh_xds::json::any_to_json;
use serde_json::{Value, json};

/// `/debug/syncz`: each proxy with istiod's fields (`proxy`, `proxy_type`, `cluster_id`,
/// `istio_version`) and, per type, the version sent, the version ACKed and the last NACK.
pub fn syncz(statuses: &[ProxyStatus]) -> Value {
    let proxies: Vec<Value> = statuses
        .iter()
        .map(|s| {
            let mut entry = json!({
                "proxy": s.proxy_id,
                "proxy_type": s.proxy_type,
                "cluster_id": s.cluster_id,
                "istio_version": s.proxy_version,
                "proxy_version": s.proxy_version,
                "revision": s.revision,
                "protocol": s.protocol,
            });
            for (kind, name) in [
                (Cluster, "cluster"),
                (Endpoint, "endpoint"),
                (Listener, "listener"),
                (Route, "route"),
            ] {
                let t = s.types.get(&kind).cloned().unwrap_or_default();
                entry[format!("{name}_sent")] = t.sent_version.into();
                entry[format!("{name}_acked")] = t.acked_version.into();
                entry[format!("{name}_nack")] = t.last_nack.map_or(Value::Null, Value::from);
            }
            entry
        })
        .collect();
    Value::Array(proxies)
}

/// `/debug/config_dump?proxyID=`: what meshd serves that proxy, in Envoy's ConfigDump
/// shape. Secrets (a gateway's `credentialName` certificates) come without their private
/// keys, as Envoy's own dump shows them.
pub fn config_dump(status: &ProxyStatus) -> Value {
    let resources = |kind: ResourceType| -> Vec<Value> {
        status
            .resources
            .of_type(kind)
            .map(|t| t.iter().map(|(_, e)| any_to_json(&e.resource())).collect())
            .unwrap_or_default()
    };
    let version = |kind: ResourceType| {
        status
            .resources
            .of_type(kind)
            .map(|t| t.version.clone())
            .unwrap_or_default()
    };
    json!({ "configs": [
        {
            "@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
            "dynamic_active_clusters": resources(Cluster).into_iter().map(|c| json!({"version_info": version(Cluster), "cluster": c})).collect::<Vec<_>>(),
        },
        {
            "@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
            "dynamic_listeners": resources(Listener).into_iter().map(|l| json!({"name": l["name"], "active_state": {"version_info": version(Listener), "listener": l}})).collect::<Vec<_>>(),
        },
        {
            "@type": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
            "dynamic_route_configs": resources(Route).into_iter().map(|r| json!({"version_info": version(Route), "route_config": r})).collect::<Vec<_>>(),
        },
        {
            "@type": "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump",
            "dynamic_endpoint_configs": resources(Endpoint).into_iter().map(|e| json!({"version_info": version(Endpoint), "endpoint_config": e})).collect::<Vec<_>>(),
        },
        {
            "@type": "type.googleapis.com/envoy.admin.v3.SecretsConfigDump",
            "dynamic_active_secrets": resources(Secret).into_iter().map(|mut s| {
                redact_private_keys(&mut s);
                json!({"name": s["name"], "version_info": version(Secret), "secret": s})
            }).collect::<Vec<_>>(),
        },
    ]})
}

/// Replaces every private key in `value` (a Secret's `tlsCertificate.privateKey`,
/// however nested) with `[redacted]`, as Envoy's admin does.
fn redact_private_keys(value: &mut Value) {
    match value {
        Value::Object(fields) => {
            for (name, field) in fields.iter_mut() {
                if name == "privateKey" || name == "private_key" {
                    *field = json!({"inlineString": "[redacted]"});
                } else {
                    redact_private_keys(field);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_private_keys),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_keys_are_redacted_wherever_they_are() {
        let mut secret = json!({"name": "kubernetes://shop-cert", "tlsCertificate": {
            "certificateChain": {"inlineBytes": "Q0VSVA=="},
            "privateKey": {"inlineBytes": "S0VZ"},
        }, "nested": [{"private_key": "KEY"}]});
        redact_private_keys(&mut secret);
        let text = secret.to_string();
        assert!(
            !text.contains("S0VZ") && !text.contains("\"KEY\""),
            "{text}"
        );
        assert_eq!(
            secret["tlsCertificate"]["certificateChain"]["inlineBytes"],
            "Q0VSVA=="
        );
        assert_eq!(
            secret["tlsCertificate"]["privateKey"]["inlineString"],
            "[redacted]"
        );
    }
}
