//! Envoy resources as JSON, keys sorted: for golden files and `/debug/config_dump`.

use envoy_types::pb::google::protobuf::Any;
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};
use std::sync::OnceLock;

/// Compiled from envoy-types' .proto files; `tests/descriptors.rs` keeps it current.
static DESCRIPTORS: &[u8] = include_bytes!("../envoy-descriptors.bin");

fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(DESCRIPTORS).expect("the checked-in descriptor set decodes")
    })
}

/// The JSON form of a packed resource, as Envoy's own config dump shows it (`@type` first
/// level included). A type unknown to the descriptor set is reported, not guessed.
pub fn any_to_json(any: &Any) -> serde_json::Value {
    let name = any.type_url.rsplit('/').next().unwrap_or_default();
    let Some(descriptor) = pool().get_message_by_name(name) else {
        return serde_json::json!({ "@type": any.type_url, "error": "type not in descriptor set" });
    };
    match DynamicMessage::decode(descriptor, any.value.as_slice()) {
        Ok(message) => {
            let options = SerializeOptions::new().skip_default_fields(true);
            let mut value = message
                .serialize_with_options(serde_json::value::Serializer, &options)
                .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }));
            if let Some(object) = value.as_object_mut() {
                object.insert("@type".into(), any.type_url.clone().into());
            }
            value
        }
        Err(e) => serde_json::json!({ "@type": any.type_url, "error": e.to_string() }),
    }
}
