//! A node id and its metadata as JSON (`ID\n{...}`), which reaches meshd's parsing of
//! labels, addresses and modes faster than protobuf bytes: a proxy or a refusal, never
//! a panic.
#![no_main]

mod common;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{ListValue, Struct, Value, value::Kind};
use libfuzzer_sys::fuzz_target;

fn value(json: &serde_json::Value) -> Value {
    let kind = match json {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(items) => Kind::ListValue(ListValue {
            values: items.iter().map(value).collect(),
        }),
        serde_json::Value::Object(fields) => Kind::StructValue(structure(fields)),
    };
    Value { kind: Some(kind) }
}

fn structure(fields: &serde_json::Map<String, serde_json::Value>) -> Struct {
    Struct {
        fields: fields.iter().map(|(k, v)| (k.clone(), value(v))).collect(),
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (id, metadata) = text.split_once('\n').unwrap_or((&text, "{}"));
    let Ok(serde_json::Value::Object(fields)) = serde_json::from_str(metadata) else {
        return;
    };
    let node = Node {
        id: id.to_string(),
        metadata: Some(structure(&fields)),
        ..Node::default()
    };
    common::serve(&node);
});
