//! Istio's own examples of its API, read where they are published in the pinned Go modules
//! (nothing is copied into this repository): the samples of `istio.io/istio` and the
//! examples in the API reference, which are the comments of `istio.io/api`'s `.proto`
//! files. Each example keeps its origin, so a disagreement names the page a user copied.

use fleetmesh_meshd::local::files_with_extensions;
use std::path::Path;

/// One Istio object, as one YAML document.
#[derive(Debug, Clone)]
pub struct Example {
    /// Where it is published: module, file and position (`… (example 3, document 1)`).
    pub origin: String,
    pub kind: String,
    pub name: String,
    pub yaml: String,
}

/// The API groups whose objects the corpus collects.
const ISTIO_GROUPS: &[&str] = &[
    "networking.istio.io/",
    "security.istio.io/",
    "telemetry.istio.io/",
    "extensions.istio.io/",
];

/// Every Istio object in the samples of `istio` and the API reference of `api` (the two
/// module directories), samples first, each in file order.
pub fn examples(istio: &Path, api: &Path) -> Vec<Example> {
    let mut found = Vec::new();
    for file in files_with_extensions(&istio.join("samples"), &["yaml"]) {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let origin = format!("istio.io/istio {}", relative(istio, &file));
        found.extend(documents(&origin, &text));
    }
    for file in files_with_extensions(api, &["proto"]) {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        for (index, block) in yaml_blocks_in_comments(&text).iter().enumerate() {
            let origin = format!(
                "istio.io/api {} (example {})",
                relative(api, &file),
                index + 1
            );
            found.extend(documents(&origin, block));
        }
    }
    found
}

/// The Istio objects of one YAML stream; documents that are not YAML (the samples hold
/// Helm templates) or not Istio objects are skipped.
fn documents(origin: &str, text: &str) -> Vec<Example> {
    use serde::Deserialize;
    let mut found = Vec::new();
    for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let Ok(value) = serde_yaml_ng::Value::deserialize(document) else {
            break;
        };
        let text_of = |key: &str| value.get(key).and_then(|v| v.as_str()).map(str::to_string);
        let (Some(api_version), Some(kind)) = (text_of("apiVersion"), text_of("kind")) else {
            continue;
        };
        if !ISTIO_GROUPS.iter().any(|g| api_version.starts_with(g)) {
            continue;
        }
        let name = value
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(|n| n.as_str())
            .unwrap_or("<unnamed>")
            .to_string();
        let yaml = serde_yaml_ng::to_string(&value).expect("a parsed document serialises");
        found.push(Example {
            origin: format!("{origin} (document {})", index + 1),
            kind,
            name,
            yaml,
        });
    }
    found
}

/// The ```` ```yaml ```` blocks of a `.proto` file's `//` comments, comment markers removed.
fn yaml_blocks_in_comments(proto: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in proto.lines() {
        let Some(comment) = line.trim_start().strip_prefix("//") else {
            // Code between comments ends any block left open by a malformed comment.
            current = None;
            continue;
        };
        let comment = comment.strip_prefix(' ').unwrap_or(comment);
        match (&mut current, comment.trim()) {
            (None, "```yaml") => current = Some(String::new()),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(block), _) => {
                block.push_str(comment);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

fn relative(root: &Path, file: &Path) -> String {
    file.strip_prefix(root)
        .unwrap_or(file)
        .display()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_yaml_blocks_from_proto_comments() {
        let proto = "// Intro.\n//\n// ```yaml\n// kind: A\n// spec:\n//   x: 1\n// ```\n\
                     message M {\n  // ```yaml\n  // kind: B\n  // ```\n}\n";
        assert_eq!(
            yaml_blocks_in_comments(proto),
            vec!["kind: A\nspec:\n  x: 1\n".to_string(), "kind: B\n".into()]
        );
    }

    #[test]
    fn keeps_only_istio_objects_and_numbers_documents() {
        let text = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\n---\n\
                    apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g}\n";
        let found = documents("origin", text);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].origin, "origin (document 2)");
        assert_eq!(
            (found[0].kind.as_str(), found[0].name.as_str()),
            ("Gateway", "g")
        );
    }
}
