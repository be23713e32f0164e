//! Byte-stable encoding of messages with map fields. The generated Envoy types hold maps
//! as HashMaps, which encode in an order that changes from one encoding to the next;
//! equal config must encode to equal bytes, since a resource's version is the hash of
//! its bytes.

use prost::Message;
use std::collections::BTreeMap;

/// `message` (its map field left empty) followed by map field `tag` in key order. Fields
/// may come in any order on the wire, so this decodes as the whole message.
pub fn encode<M: Message, V: Message + Default + PartialEq>(
    message: &M,
    tag: u32,
    map: &BTreeMap<String, V>,
) -> Vec<u8> {
    use prost::encoding::{btree_map, message, string};
    let mut bytes = message.encode_to_vec();
    btree_map::encode(
        string::encode,
        string::encoded_len,
        message::encode,
        message::encoded_len,
        tag,
        map,
        &mut bytes,
    );
    bytes
}
