//! Kubernetes AdmissionReview v1: decoding what the API server sends (untrusted input:
//! every malformed body is an error naming what is wrong, never a panic) and encoding
//! the answer, a JSONPatch or a denial.

use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};

/// Larger than any object the API server stores (its default limit is 3 MiB).
pub const MAX_REVIEW_BYTES: usize = 8 * 1024 * 1024;

const API_VERSION: &str = "admission.k8s.io/v1";

/// Why a body is not an AdmissionReview this webhook answers.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ReviewError {
    /// Over the size limit (bytes sent).
    #[error("the review is {0} bytes; at most {MAX_REVIEW_BYTES} are accepted")]
    TooLarge(usize),
    /// Not JSON of the expected shape.
    #[error("not an AdmissionReview: {0}")]
    Malformed(String),
    /// Another API version than `admission.k8s.io/v1`.
    #[error("apiVersion {0:?} is not supported (send {API_VERSION})")]
    ApiVersion(String),
    /// Another kind.
    #[error("kind {0:?} is not AdmissionReview")]
    Kind(String),
    /// No `request`.
    #[error("the review has no request")]
    NoRequest,
    /// A request without a uid (the response could not name it).
    #[error("request.uid is empty")]
    NoUid,
}

/// The parts of `request` this webhook reads.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRequest {
    /// What the response must echo.
    pub uid: String,
    /// The kind of the object under review.
    pub kind: GroupVersionKind,
    /// `CREATE`, `UPDATE`, ...
    #[serde(default)]
    pub operation: String,
    /// The object's namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// The object's name (empty for a pod with `generateName`).
    #[serde(default)]
    pub name: Option<String>,
    /// The object as submitted.
    #[serde(default)]
    pub object: Option<Value>,
    /// Nothing is persisted (`kubectl --dry-run=server`).
    #[serde(default)]
    pub dry_run: Option<bool>,
}

/// A kind with its group and version.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct GroupVersionKind {
    /// Empty for the core group.
    #[serde(default)]
    pub group: String,
    /// e.g. `v1`.
    #[serde(default)]
    pub version: String,
    /// e.g. `Pod`.
    pub kind: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AdmissionReview {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    request: Option<AdmissionRequest>,
}

/// Decodes the body the API server POSTs.
pub fn decode(body: &[u8]) -> Result<AdmissionRequest, ReviewError> {
    if body.len() > MAX_REVIEW_BYTES {
        return Err(ReviewError::TooLarge(body.len()));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let review: AdmissionReview = serde_path_to_error::deserialize(&mut deserializer)
        .map_err(|e| ReviewError::Malformed(format!("{}: {}", e.path(), e.inner())))?;
    if review.api_version != API_VERSION {
        return Err(ReviewError::ApiVersion(review.api_version));
    }
    if review.kind != "AdmissionReview" {
        return Err(ReviewError::Kind(review.kind));
    }
    let request = review.request.ok_or(ReviewError::NoRequest)?;
    if request.uid.is_empty() {
        return Err(ReviewError::NoUid);
    }
    Ok(request)
}

/// What the webhook decided about one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Admit unchanged.
    Allow,
    /// Admit with these JSONPatch operations applied.
    Patch(json_patch::Patch),
    /// Refuse, telling the user why (kubectl prints the message).
    Deny {
        /// The HTTP status code the API server reports.
        code: u16,
        /// Why.
        message: String,
    },
}

/// The AdmissionReview answering request `uid`.
pub fn respond(uid: &str, verdict: Verdict) -> Value {
    let response = match verdict {
        Verdict::Allow => json!({"uid": uid, "allowed": true}),
        Verdict::Patch(patch) if patch.0.is_empty() => json!({"uid": uid, "allowed": true}),
        Verdict::Patch(patch) => {
            let encoded = serde_json::to_vec(&patch).expect("a patch always serializes");
            json!({
                "uid": uid,
                "allowed": true,
                "patchType": "JSONPatch",
                "patch": base64::engine::general_purpose::STANDARD.encode(encoded),
            })
        }
        Verdict::Deny { code, message } => json!({
            "uid": uid,
            "allowed": false,
            "status": {"code": code, "message": message},
        }),
    };
    json!({"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response})
}

#[cfg(test)]
mod tests {
    use super::*;

    const REVIEW: &str = r#"{
      "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
      "request": {"uid": "u-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                  "operation": "CREATE", "namespace": "shop", "object": {"metadata": {}}}
    }"#;

    #[test]
    fn decodes_a_pod_review() {
        let request = decode(REVIEW.as_bytes()).unwrap();
        assert_eq!(request.uid, "u-1");
        assert_eq!(request.kind.kind, "Pod");
        assert_eq!(request.operation, "CREATE");
        assert_eq!(request.namespace.as_deref(), Some("shop"));
    }

    #[test]
    fn malformed_reviews_say_what_is_wrong() {
        let cases = [
            ("", "not an AdmissionReview"),
            ("[]", "not an AdmissionReview"),
            (
                r#"{"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview"}"#,
                "v1beta1",
            ),
            (
                r#"{"apiVersion": "admission.k8s.io/v1", "kind": "Pod"}"#,
                "is not AdmissionReview",
            ),
            (
                r#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}"#,
                "no request",
            ),
            (
                r#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": 7}}"#,
                "request.uid",
            ),
            (
                r#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": "", "kind": {"kind": "Pod"}}}"#,
                "uid is empty",
            ),
        ];
        for (body, expected) in cases {
            let error = decode(body.as_bytes()).unwrap_err().to_string();
            assert!(error.contains(expected), "{body}: {error}");
        }
        let huge = vec![b' '; MAX_REVIEW_BYTES + 1];
        assert_eq!(
            decode(&huge),
            Err(ReviewError::TooLarge(MAX_REVIEW_BYTES + 1))
        );
    }

    #[test]
    fn a_patch_is_base64_jsonpatch() {
        let patch: json_patch::Patch =
            serde_json::from_value(json!([{"op": "add", "path": "/metadata/labels", "value": {}}]))
                .unwrap();
        let review = respond("u-1", Verdict::Patch(patch));
        let response = &review["response"];
        assert_eq!(response["uid"], "u-1");
        assert_eq!(response["patchType"], "JSONPatch");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(response["patch"].as_str().unwrap())
            .unwrap();
        let decoded: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(decoded[0]["path"], "/metadata/labels");
        let denied = respond(
            "u-2",
            Verdict::Deny {
                code: 400,
                message: "no".into(),
            },
        );
        assert_eq!(denied["response"]["allowed"], false);
        assert_eq!(denied["response"]["status"]["message"], "no");
    }

    proptest::proptest! {
        #[test]
        fn decoding_never_panics(body in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = decode(&body);
        }
    }
}
