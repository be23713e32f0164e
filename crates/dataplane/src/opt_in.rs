//! Opting in, as the seed does it: annotation
//! `mesh.cloud.google.com/proxy='{"managed":"true"}'` on a namespace, or on one pod (the
//! pod's says last; `{"managed":"false"}` turns it off). A malformed value counts as not
//! managed and is reported on the object.

use serde_json::Value;

/// The annotation a namespace or pod opts in or out with (`{"managed":"true"}`).
pub const ANNOTATION: &str = "mesh.cloud.google.com/proxy";

/// What one object's annotation says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OptIn {
    /// No annotation: the other level decides.
    Unset,
    /// `managed` true or false.
    Managed(bool),
    /// Unreadable: treated as unmanaged; the reason goes into an Event.
    Malformed(String),
}

/// What an annotation's value says.
pub fn parse(annotation: Option<&str>) -> OptIn {
    let Some(text) = annotation else {
        return OptIn::Unset;
    };
    let value: Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(e) => {
            return OptIn::Malformed(format!(
                "{ANNOTATION}: {text:?} is not JSON ({e}); write '{{\"managed\":\"true\"}}'"
            ));
        }
    };
    match value.get("managed") {
        Some(Value::String(s)) if s == "true" => OptIn::Managed(true),
        Some(Value::String(s)) if s == "false" => OptIn::Managed(false),
        Some(Value::Bool(b)) => OptIn::Managed(*b),
        Some(other) => OptIn::Malformed(format!(
            "{ANNOTATION}: \"managed\" is {other}; it must be \"true\" or \"false\""
        )),
        None => OptIn::Malformed(format!(
            "{ANNOTATION}: {text:?} has no \"managed\" field; write '{{\"managed\":\"true\"}}'"
        )),
    }
}

/// Whether a pod is managed: its own annotation if it has a valid one, else its
/// namespace's.
pub fn is_managed(namespace: &OptIn, pod: &OptIn) -> bool {
    match (pod, namespace) {
        (OptIn::Managed(managed), _) => *managed,
        (OptIn::Malformed(_), _) => false,
        (OptIn::Unset, OptIn::Managed(managed)) => *managed,
        (OptIn::Unset, _) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeds_values_and_bad_ones() {
        assert_eq!(parse(Some(r#"{"managed":"true"}"#)), OptIn::Managed(true));
        assert_eq!(parse(Some(r#"{"managed":"false"}"#)), OptIn::Managed(false));
        assert_eq!(parse(None), OptIn::Unset);
        for bad in ["managed", r#"{"managed":"yes"}"#, "{}", "[1]"] {
            let OptIn::Malformed(reason) = parse(Some(bad)) else {
                panic!("{bad} should be malformed");
            };
            assert!(reason.contains(ANNOTATION), "{reason}");
        }
    }

    #[test]
    fn the_pod_says_last() {
        let on = OptIn::Managed(true);
        let off = OptIn::Managed(false);
        let bad = OptIn::Malformed("x".into());
        assert!(is_managed(&on, &OptIn::Unset));
        assert!(
            !is_managed(&on, &off),
            "a pod can opt out of a managed namespace"
        );
        assert!(is_managed(&OptIn::Unset, &on), "or opt in alone");
        assert!(
            !is_managed(&on, &bad),
            "a malformed pod annotation is unmanaged"
        );
        assert!(!is_managed(&bad, &OptIn::Unset));
        assert!(!is_managed(&OptIn::Unset, &OptIn::Unset));
    }
}
