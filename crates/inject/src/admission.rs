//! The injection webhook's whole answer to one request body: decode the review, decide,
//! render, diff. Pure, so the HTTP server, the fuzzer and the benchmark share it.

use crate::policy::{self, Decision};
use crate::review::{self, ReviewError, Verdict};
use crate::template::{self, Settings};
use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

/// The AdmissionReview answering `body`; an error when `body` is not a review at all
/// (the server answers 400 with it).
pub fn admit_pod(body: &[u8], settings: &Settings) -> Result<Value, ReviewError> {
    let request = review::decode(body)?;
    let verdict = verdict(&request, settings);
    Ok(review::respond(&request.uid, verdict))
}

fn verdict(request: &review::AdmissionRequest, settings: &Settings) -> Verdict {
    let deny = |message: String| Verdict::Deny { code: 400, message };
    if request.kind.kind != "Pod" || request.operation != "CREATE" {
        // The webhook is registered for Pod CREATE only; anything else passes untouched.
        return Verdict::Allow;
    }
    let Some(object) = &request.object else {
        return deny("request.object is missing".into());
    };
    let pod: Pod = match serde_path_to_error::deserialize(object) {
        Ok(pod) => pod,
        Err(e) => return deny(format!("request.object: {}: {}", e.path(), e.inner())),
    };
    let namespace = request
        .namespace
        .clone()
        .or_else(|| pod.metadata.namespace.clone())
        .unwrap_or_else(|| "default".into());
    match policy::decide(&pod, &namespace) {
        Decision::Skip(_) => Verdict::Allow,
        Decision::Reject(message) => deny(message),
        Decision::Inject(which) => match template::inject(&pod, which, settings) {
            Ok(injected) => Verdict::Patch(template::patch(&pod, &injected)),
            Err(e) => deny(e.to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Channel, InjectedBy, Revision};
    use serde_json::json;

    fn settings() -> Settings {
        Settings {
            revision: Revision::of(Channel::Regular),
            xds_address: "127.0.0.1:15010".into(),
            trust_domain: "cluster.local".into(),
            cluster_id: "c1".into(),
            cni_managed: false,
            injected_by: InjectedBy::Webhook,
            proxy_version: None,
            hub: crate::DEFAULT_HUB.into(),
            delta_xds: false,
        }
    }

    fn review(object: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                        "operation": "CREATE", "namespace": "shop", "object": object},
        }))
        .unwrap()
    }

    #[test]
    fn a_pod_gets_a_patch_and_an_injected_pod_none() {
        let pod = json!({"metadata": {"name": "web"}, "spec": {"containers": [{"name": "web"}]}});
        let answer = admit_pod(&review(pod), &settings()).unwrap();
        assert_eq!(answer["response"]["patchType"], "JSONPatch");
        let injected = json!({"metadata": {"name": "web", "annotations": {"sidecar.istio.io/status": "{}"}},
            "spec": {"containers": [{"name": "web"}]}});
        let answer = admit_pod(&review(injected), &settings()).unwrap();
        assert_eq!(answer["response"]["allowed"], true);
        assert!(
            answer["response"].get("patch").is_none(),
            "injection is idempotent"
        );
    }

    #[test]
    fn a_malformed_pod_is_denied_with_the_field() {
        let answer =
            admit_pod(&review(json!({"spec": {"containers": "web"}})), &settings()).unwrap();
        assert_eq!(answer["response"]["allowed"], false);
        let message = answer["response"]["status"]["message"].as_str().unwrap();
        assert!(message.contains("spec.containers"), "{message}");
    }
}
