//! The app's HTTP and TCP probes, pointed at the agent's status port. With STRICT mTLS
//! the kubelet's plaintext probe would be refused by the sidecar, so (as Istio does) the
//! kubelet asks the agent, and the agent probes the app from inside the pod. The agent
//! finds the original probes in `ISTIO_KUBE_APP_PROBERS`, keyed by the new paths.

use k8s_openapi::api::core::v1::{Container, HTTPGetAction, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Map, Value, json};

/// Where the agent answers the rewritten probes (Istio's 15020).
pub const STATUS_PORT: i32 = 15020;

/// The environment variable carrying the original probes to the agent.
pub const APP_PROBERS_ENV: &str = "ISTIO_KUBE_APP_PROBERS";

/// Rewrites the probes of `containers`; returns the originals by new path (empty when
/// there was nothing to rewrite).
pub fn rewrite(containers: &mut [Container]) -> Map<String, Value> {
    let mut probers = Map::new();
    for container in containers {
        let ports = container.ports.clone().unwrap_or_default();
        let named_port = |name: &str| {
            ports
                .iter()
                .find(|p| p.name.as_deref() == Some(name))
                .map(|p| p.container_port)
        };
        let name = container.name.clone();
        for (probe, kind) in [
            (&mut container.readiness_probe, "readyz"),
            (&mut container.liveness_probe, "livez"),
            (&mut container.startup_probe, "startupz"),
        ] {
            let Some(probe) = probe else { continue };
            let path = format!("/app-health/{name}/{kind}");
            if let Some(original) = take_original(probe, &named_port) {
                probers.insert(path.clone(), original);
                probe.http_get = Some(HTTPGetAction {
                    path: Some(path),
                    port: IntOrString::Int(STATUS_PORT),
                    scheme: Some("HTTP".into()),
                    ..Default::default()
                });
            }
        }
    }
    probers
}

/// The probe's HTTP or TCP check as the agent needs it (named ports resolved to numbers,
/// since the agent cannot see the pod spec), removed from `probe`; `None` for exec and
/// gRPC probes, which stay as they are.
fn take_original(probe: &mut Probe, named_port: &impl Fn(&str) -> Option<i32>) -> Option<Value> {
    let resolve = |port: &IntOrString| match port {
        IntOrString::Int(number) => Some(*number),
        IntOrString::String(name) => name.parse().ok().or_else(|| named_port(name)),
    };
    let timeout = probe.timeout_seconds.unwrap_or(1);
    if let Some(http) = &probe.http_get {
        let port = resolve(&http.port)?;
        let mut original = json!({
            "httpGet": {
                "path": http.path.clone().unwrap_or_else(|| "/".into()),
                "port": port,
                "scheme": http.scheme.clone().unwrap_or_else(|| "HTTP".into()),
            },
            "timeoutSeconds": timeout,
        });
        if let Some(headers) = &http.http_headers {
            original["httpGet"]["httpHeaders"] = serde_json::to_value(headers).ok()?;
        }
        probe.http_get = None;
        return Some(original);
    }
    if let Some(tcp) = &probe.tcp_socket {
        let port = resolve(&tcp.port)?;
        probe.tcp_socket = None;
        return Some(json!({"tcpSocket": {"port": port}, "timeoutSeconds": timeout}));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_and_tcp_probes_go_to_the_agent_and_exec_stays() {
        let mut containers: Vec<Container> = serde_json::from_value(json!([{
            "name": "web",
            "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "timeoutSeconds": 3},
            "livenessProbe": {"tcpSocket": {"port": 8080}},
            "startupProbe": {"exec": {"command": ["true"]}},
        }]))
        .unwrap();
        let probers = rewrite(&mut containers);
        let web = &containers[0];
        let ready = web.readiness_probe.as_ref().unwrap();
        assert_eq!(
            ready.http_get.as_ref().unwrap().path.as_deref(),
            Some("/app-health/web/readyz")
        );
        assert_eq!(
            ready.http_get.as_ref().unwrap().port,
            IntOrString::Int(15020)
        );
        assert_eq!(
            ready.timeout_seconds,
            Some(3),
            "the kubelet's timeout stays"
        );
        let live = web.liveness_probe.as_ref().unwrap();
        assert!(live.tcp_socket.is_none());
        assert_eq!(
            live.http_get.as_ref().unwrap().path.as_deref(),
            Some("/app-health/web/livez")
        );
        assert!(web.startup_probe.as_ref().unwrap().exec.is_some());
        assert_eq!(
            Value::Object(probers),
            json!({
                "/app-health/web/readyz": {"httpGet": {"path": "/ready", "port": 8080, "scheme": "HTTP"}, "timeoutSeconds": 3},
                "/app-health/web/livez": {"tcpSocket": {"port": 8080}, "timeoutSeconds": 1},
            })
        );
    }

    #[test]
    fn an_unknown_named_port_leaves_the_probe_alone() {
        let mut containers: Vec<Container> = serde_json::from_value(json!([{
            "name": "web",
            "readinessProbe": {"httpGet": {"path": "/", "port": "nope"}},
        }]))
        .unwrap();
        assert!(rewrite(&mut containers).is_empty());
        let probe = containers[0].readiness_probe.as_ref().unwrap();
        assert_eq!(
            probe.http_get.as_ref().unwrap().port,
            IntOrString::String("nope".into())
        );
    }
}
