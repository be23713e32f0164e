//! Whether a pod gets a proxy, and which template. Namespace selection happens in the
//! API server (the webhooks' selectors); what is left is the pod's own say, with
//! Istio's precedence: the `sidecar.istio.io/inject` label over the annotation.

use crate::{PROXY_CONTAINER, annotations, labels};
use k8s_openapi::api::core::v1::Pod;

/// Istio's injection templates meshd renders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Template {
    /// A sidecar beside the app, with capture.
    Sidecar,
    /// The declared `istio-proxy` container of a gateway Deployment, filled in.
    Gateway,
}

/// What the webhook does with a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Inject with this template.
    Inject(Template),
    /// Admit the pod unchanged, for this reason.
    Skip(&'static str),
    /// Refuse the pod: injection was asked for in a way that cannot work.
    Reject(String),
}

/// Namespaces whose pods are never injected, as in Istio.
const IGNORED_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];

/// Istio's injection rules for `pod` in `namespace` (its labels and annotations; the
/// namespace's labels were matched by the webhook's selectors).
pub fn decide(pod: &Pod, namespace: &str) -> Decision {
    let meta = &pod.metadata;
    let annotation = |key: &str| meta.annotations.as_ref().and_then(|a| a.get(key));
    if annotation(annotations::STATUS).is_some() {
        return Decision::Skip("already injected");
    }
    if IGNORED_NAMESPACES.contains(&namespace) {
        return Decision::Skip("system namespace");
    }
    if pod.spec.as_ref().and_then(|s| s.host_network) == Some(true) {
        return Decision::Skip("hostNetwork pod");
    }
    let opt = meta
        .labels
        .as_ref()
        .and_then(|l| l.get(labels::INJECT))
        .or_else(|| annotation(annotations::INJECT));
    if let Some(value) = opt
        && !is_true(value)
    {
        return Decision::Skip("sidecar.istio.io/inject is not true");
    }
    let template = match annotation(annotations::TEMPLATES).map(|t| t.trim()) {
        None | Some("") | Some("sidecar") => Template::Sidecar,
        Some("gateway") => Template::Gateway,
        Some(other) => {
            return Decision::Reject(format!(
                "annotation {}: unknown template {other:?} (templates: sidecar, gateway)",
                annotations::TEMPLATES
            ));
        }
    };
    if template == Template::Gateway {
        let has_proxy = pod
            .spec
            .as_ref()
            .is_some_and(|s| s.containers.iter().any(|c| c.name == PROXY_CONTAINER));
        if !has_proxy {
            return Decision::Reject(format!(
                "the gateway template fills in a container named {PROXY_CONTAINER:?} (with image: auto); this pod has none"
            ));
        }
    }
    Decision::Inject(template)
}

/// Istio reads these as true; anything else, e.g. `"false"` or a typo, is false.
fn is_true(value: &str) -> bool {
    matches!(
        value.to_ascii_lowercase().as_str(),
        "y" | "yes" | "true" | "on"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: &str) -> Pod {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn the_label_wins_over_the_annotation() {
        let both = pod(
            r#"{"metadata": {"labels": {"sidecar.istio.io/inject": "true"},
            "annotations": {"sidecar.istio.io/inject": "false"}}, "spec": {"containers": []}}"#,
        );
        assert_eq!(decide(&both, "shop"), Decision::Inject(Template::Sidecar));
        let label_off = pod(
            r#"{"metadata": {"labels": {"sidecar.istio.io/inject": "false"},
            "annotations": {"sidecar.istio.io/inject": "true"}}, "spec": {"containers": []}}"#,
        );
        assert!(matches!(decide(&label_off, "shop"), Decision::Skip(_)));
        let annotation_off = pod(
            r#"{"metadata": {"annotations": {"sidecar.istio.io/inject": "false"}},
            "spec": {"containers": []}}"#,
        );
        assert!(matches!(decide(&annotation_off, "shop"), Decision::Skip(_)));
    }

    #[test]
    fn skips_injected_host_network_and_system_pods() {
        let injected = pod(r#"{"metadata": {"annotations": {"sidecar.istio.io/status": "{}"}}}"#);
        assert_eq!(
            decide(&injected, "shop"),
            Decision::Skip("already injected")
        );
        let host = pod(r#"{"metadata": {}, "spec": {"hostNetwork": true, "containers": []}}"#);
        assert_eq!(decide(&host, "shop"), Decision::Skip("hostNetwork pod"));
        let plain = pod(r#"{"metadata": {}, "spec": {"containers": []}}"#);
        assert_eq!(
            decide(&plain, "kube-system"),
            Decision::Skip("system namespace")
        );
        assert_eq!(decide(&plain, "shop"), Decision::Inject(Template::Sidecar));
    }

    #[test]
    fn gateway_template_needs_an_istio_proxy_container() {
        let gateway = pod(
            r#"{"metadata": {"annotations": {"inject.istio.io/templates": "gateway"}},
            "spec": {"containers": [{"name": "istio-proxy", "image": "auto"}]}}"#,
        );
        assert_eq!(decide(&gateway, "gw"), Decision::Inject(Template::Gateway));
        let bare = pod(
            r#"{"metadata": {"annotations": {"inject.istio.io/templates": "gateway"}},
            "spec": {"containers": [{"name": "app"}]}}"#,
        );
        assert!(matches!(decide(&bare, "gw"), Decision::Reject(m) if m.contains("istio-proxy")));
        let typo = pod(
            r#"{"metadata": {"annotations": {"inject.istio.io/templates": "gatway"}},
            "spec": {"containers": []}}"#,
        );
        assert!(matches!(decide(&typo, "gw"), Decision::Reject(m) if m.contains("gatway")));
    }
}
