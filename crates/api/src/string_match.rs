//! Istio's `StringMatch`: exact, prefix or regex.

use serde::{Deserialize, Deserializer, Serialize};

/// Istio's `StringMatch`: exactly one of `exact`, `prefix`, `regex` (RE2 syntax).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum StringMatch {
    /// The whole string.
    Exact(String),
    /// Its beginning.
    Prefix(String),
    /// An RE2 regex that must match the whole string.
    Regex(String),
}

/// The YAML shape: a map with one of three keys. (serde_yaml_ng reads externally tagged
/// enums from YAML tags, not maps, so the one-of rule is checked here.)
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OneOf {
    exact: Option<String>,
    prefix: Option<String>,
    regex: Option<String>,
}

impl<'de> Deserialize<'de> for StringMatch {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match OneOf::deserialize(deserializer)? {
            OneOf {
                exact: Some(s),
                prefix: None,
                regex: None,
            } => Ok(StringMatch::Exact(s)),
            OneOf {
                exact: None,
                prefix: Some(s),
                regex: None,
            } => Ok(StringMatch::Prefix(s)),
            OneOf {
                exact: None,
                prefix: None,
                regex: Some(s),
            } => Ok(StringMatch::Regex(s)),
            _ => Err(serde::de::Error::custom(
                "exactly one of exact, prefix or regex is required",
            )),
        }
    }
}

impl schemars::JsonSchema for StringMatch {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "StringMatch".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "object",
            "description": "Exactly one of exact, prefix or regex (RE2).",
            "properties": {
                "exact": {"type": "string"},
                "prefix": {"type": "string"},
                "regex": {"type": "string"}
            }
        })
    }
}
