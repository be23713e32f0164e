//! Reading config files: multi-document YAML → typed, validated resources.

use crate::error::{ConfigError, FieldError};
use crate::resource::{Kind, Resource};
use crate::validate::validate;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::path::PathBuf;

/// A resource and where it was read from.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedResource {
    /// The parsed, validated resource.
    pub resource: Resource,
    /// The file it came from (`None`: standard input or the API server).
    pub file: Option<PathBuf>,
    /// Its document in that file, counted from 0.
    pub document: usize,
}

/// Parses and validates every document of one file. A file is all-or-nothing: any error
/// rejects the whole file, so a half-applied file never reaches a proxy.
pub fn load_documents(
    file: Option<&PathBuf>,
    text: &str,
) -> Result<Vec<LoadedResource>, Vec<ConfigError>> {
    let mut resources = Vec::new();
    let mut errors = Vec::new();
    for (document, yaml) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let fail =
            |resource: String, error: FieldError| ConfigError::new(file, document, resource, error);
        let value = match serde_yaml_ng::Value::deserialize(yaml) {
            Ok(serde_yaml_ng::Value::Null) => continue,
            Ok(value) => value,
            Err(e) => {
                errors.push(fail(
                    "document".into(),
                    FieldError::new("(yaml)", e.to_string()),
                ));
                // The YAML stream itself is broken; later documents cannot be trusted.
                break;
            }
        };
        match parse_resource(value) {
            Ok(resource) => {
                let problems = validate(&resource);
                if problems.is_empty() {
                    resources.push(LoadedResource {
                        resource,
                        file: file.cloned(),
                        document,
                    });
                } else {
                    let described = resource.describe();
                    errors.extend(problems.into_iter().map(|p| fail(described.clone(), p)));
                }
            }
            Err((resource, problems)) => {
                errors.extend(problems.into_iter().map(|p| fail(resource.clone(), p)));
            }
        }
    }
    if errors.is_empty() {
        Ok(resources)
    } else {
        Err(errors)
    }
}

/// Parses and validates an object as the API server stores it (with uid, managedFields,
/// status...): only what a user writes is read. Returns the resource, or what is known of
/// it (`Kind namespace/name`) with every problem found.
pub fn load_stored_object(
    object: &serde_yaml_ng::Value,
) -> Result<Resource, (String, Vec<FieldError>)> {
    use serde_yaml_ng::{Mapping, Value};
    let mut metadata = Mapping::new();
    for key in ["name", "namespace", "labels", "annotations"] {
        if let Some(value) = object.get("metadata").and_then(|m| m.get(key)) {
            metadata.insert(key.into(), value.clone());
        }
    }
    let mut clean = Mapping::new();
    for key in ["apiVersion", "kind"] {
        if let Some(value) = object.get(key) {
            clean.insert(key.into(), value.clone());
        }
    }
    clean.insert("metadata".into(), Value::Mapping(metadata));
    let spec = object.get("spec").cloned();
    clean.insert(
        "spec".into(),
        spec.unwrap_or(Value::Mapping(Mapping::new())),
    );
    let resource = parse_resource(Value::Mapping(clean))?;
    let problems = validate(&resource);
    if problems.is_empty() {
        Ok(resource)
    } else {
        Err((resource.describe(), problems))
    }
}

/// The typed resource, or what is known of it (`Kind namespace/name`) with its problems:
/// every field it has that fleetmesh does not read, else the first that does not parse.
fn parse_resource(value: serde_yaml_ng::Value) -> Result<Resource, (String, Vec<FieldError>)> {
    let text_field = |name: &str| value.get(name).and_then(|v| v.as_str()).map(str::to_string);
    let kind_text = text_field("kind");
    let described = {
        let meta = value.get("metadata");
        let name = meta
            .and_then(|m| m.get("name"))
            .and_then(|v| v.as_str())
            .unwrap_or("<unnamed>");
        let ns = meta
            .and_then(|m| m.get("namespace"))
            .and_then(|v| v.as_str())
            .unwrap_or("default");
        format!(
            "{} {ns}/{name}",
            kind_text.as_deref().unwrap_or("<no kind>")
        )
    };
    let (Some(api_version), Some(kind_text)) = (text_field("apiVersion"), kind_text) else {
        return Err((
            described,
            vec![FieldError::new(
                "kind",
                "every document needs apiVersion and kind",
            )],
        ));
    };
    let kind = Kind::from_type(&api_version, &kind_text).map_err(|reason| {
        (
            described.clone(),
            vec![FieldError::new("apiVersion/kind", reason.to_string())],
        )
    })?;
    let mut value = value;
    let unread = match value.get_mut("spec") {
        Some(spec) => crate::fields::unread_fields(kind, spec),
        None => Vec::new(),
    };
    if !unread.is_empty() {
        return Err((described, unread));
    }
    fn typed<T: DeserializeOwned>(value: serde_yaml_ng::Value) -> Result<T, FieldError> {
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." {
                "(root)".to_string()
            } else {
                path
            };
            FieldError::new(field, e.into_inner().to_string())
        })
    }
    let parsed = match kind {
        Kind::Service => typed(value).map(Resource::Service),
        Kind::Endpoints => typed(value).map(Resource::Endpoints),
        Kind::VirtualService => typed(value).map(Resource::VirtualService),
        Kind::DestinationRule => typed(value).map(Resource::DestinationRule),
        Kind::Gateway => typed(value).map(Resource::Gateway),
        Kind::ServiceEntry => typed(value).map(Resource::ServiceEntry),
        Kind::WorkloadEntry => typed(value).map(Resource::WorkloadEntry),
        Kind::Sidecar => typed(value).map(Resource::Sidecar),
        Kind::PeerAuthentication => typed(value).map(Resource::PeerAuthentication),
        Kind::AuthorizationPolicy => typed(value).map(Resource::AuthorizationPolicy),
        Kind::RequestAuthentication => typed(value).map(Resource::RequestAuthentication),
    };
    parsed.map_err(|e| (described, vec![e]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors_of(text: &str) -> Vec<String> {
        let file = PathBuf::from("mesh.yaml");
        load_documents(Some(&file), text)
            .unwrap_err()
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn loads_multi_document_files() {
        let text = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: bookinfo}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 80
    - destination: {host: reviews, subset: v2}
      weight: 20
---
"#;
        let loaded = load_documents(None, text).unwrap();
        assert_eq!(loaded.len(), 2);
        assert_eq!(
            loaded[1].resource.describe(),
            "VirtualService bookinfo/reviews"
        );
        assert_eq!(loaded[1].document, 1);
    }

    #[test]
    fn unknown_field_is_named() {
        let errors = errors_of(
            r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
      wieght: 100
"#,
        );
        assert_eq!(errors.len(), 1);
        let e = &errors[0];
        assert!(
            e.starts_with("mesh.yaml: VirtualService default/reviews: spec.http[0].route[0]"),
            "{e}"
        );
        assert!(e.contains("unknown field `wieght`"), "{e}");
    }

    #[test]
    fn wrong_api_version_and_unknown_kind() {
        let errors = errors_of(
            "apiVersion: networking.istio.io/v2\nkind: VirtualService\nmetadata: {name: a}\nspec: {}\n",
        );
        assert!(
            errors[0].contains("apiVersion \"networking.istio.io/v2\" is not valid"),
            "{errors:?}"
        );
        let errors = errors_of("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n");
        assert!(
            errors[0].contains("kind \"ConfigMap\" is not supported"),
            "{errors:?}"
        );
    }

    #[test]
    fn second_document_is_located() {
        let errors = errors_of(
            "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 80}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: b}\nspec: {ports: [{port: 0}]}\n",
        );
        assert_eq!(
            errors,
            vec![
                "mesh.yaml (document 2): Service default/b: spec.ports[0].port: port must be in 1..=65535"
            ]
        );
    }

    #[test]
    fn broken_yaml_is_an_error() {
        let errors = errors_of("apiVersion: v1\nkind: [\n");
        assert!(errors[0].contains("(yaml)"), "{errors:?}");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in "(?s).{0,200}") {
            let _ = load_documents(None, &text);
        }

        #[test]
        fn yaml_like_text_never_panics(text in "(apiVersion: v1\n|kind: (Service|VirtualService)\n|metadata: \\{name: a\\}\n|spec: \\{ports: \\[\\{port: [0-9]{1,6}\\}\\]\\}\n|---\n|  [a-z]+: [a-z0-9]*\n){0,8}") {
            let _ = load_documents(None, &text);
        }
    }
}
