//! Byte-stable encoding of messages with map fields. The generated Envoy types hold maps
//! as HashMaps, which encode in an order that changes from one encoding to the next;
//! equal config must encode to equal bytes, since a resource's version is the hash of
//! its bytes. Metadata (a map of Structs, each a map) is the other such field meshd
//! sets, on clusters and endpoints.

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::Metadata;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::google::protobuf::{Struct, Value};
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

/// A cluster's bytes with its metadata's maps in key order (metadata: see
/// [`metadata_field`]).
pub fn encode_cluster(cluster: &Cluster) -> Vec<u8> {
    let mut plain = cluster.clone();
    let metadata = plain.metadata.take();
    let mut bytes = plain.encode_to_vec();
    if let Some(metadata) = &metadata {
        metadata_field(CLUSTER_METADATA, metadata, &mut bytes);
    }
    bytes
}

/// An assignment's bytes with each endpoint's metadata's maps in key order: the
/// endpoints (in order) re-encoded around their metadata.
pub fn encode_assignment(assignment: &ClusterLoadAssignment) -> Vec<u8> {
    use prost::encoding::bytes;
    let mut head = assignment.clone();
    head.endpoints.clear();
    let mut out = head.encode_to_vec();
    for locality in &assignment.endpoints {
        let mut locality_head = locality.clone();
        locality_head.lb_endpoints.clear();
        let mut encoded_locality = locality_head.encode_to_vec();
        for endpoint in &locality.lb_endpoints {
            let mut plain = endpoint.clone();
            let metadata = plain.metadata.take();
            let mut encoded = plain.encode_to_vec();
            if let Some(metadata) = &metadata {
                metadata_field(LB_ENDPOINT_METADATA, metadata, &mut encoded);
            }
            bytes::encode(LB_ENDPOINTS, &encoded, &mut encoded_locality);
        }
        bytes::encode(ENDPOINTS, &encoded_locality, &mut out);
    }
    out
}

/// `Cluster.metadata`, `LbEndpoint.metadata`, `ClusterLoadAssignment.endpoints` and
/// `LocalityLbEndpoints.lb_endpoints`.
const CLUSTER_METADATA: u32 = 25;
const LB_ENDPOINT_METADATA: u32 = 3;
const ENDPOINTS: u32 = 2;
const LB_ENDPOINTS: u32 = 2;

/// Field `tag` holding `metadata` with its filter namespaces and their keys in order
/// (values other than structs keep prost's encoding, which has no map).
fn metadata_field(tag: u32, metadata: &Metadata, out: &mut Vec<u8>) {
    use prost::encoding::bytes;
    let mut encoded = Vec::new();
    let namespaces: BTreeMap<_, _> = metadata.filter_metadata.iter().collect();
    for (namespace, fields) in namespaces {
        let mut entry = Vec::new();
        prost::encoding::string::encode(1, namespace, &mut entry);
        bytes::encode(2, &struct_bytes(fields), &mut entry);
        bytes::encode(1, &entry, &mut encoded); // Metadata.filter_metadata
    }
    let mut rest = metadata.clone();
    rest.filter_metadata.clear();
    encoded.extend(rest.encode_to_vec());
    bytes::encode(tag, &encoded, out);
}

/// A Struct with its keys in order.
fn struct_bytes(fields: &Struct) -> Vec<u8> {
    let sorted: BTreeMap<String, Value> = fields
        .fields
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut out = Vec::new();
    prost::encoding::btree_map::encode(
        prost::encoding::string::encode,
        prost::encoding::string::encoded_len,
        prost::encoding::message::encode,
        prost::encoding::message::encoded_len,
        1, // Struct.fields
        &sorted,
        &mut out,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(keys: &[&str]) -> Metadata {
        let fields = keys
            .iter()
            .map(|k| {
                let value = Value {
                    kind: Some(envoy_types::pb::google::protobuf::value::Kind::StringValue(
                        k.to_string(),
                    )),
                };
                (k.to_string(), value)
            })
            .collect();
        Metadata {
            filter_metadata: [
                ("b".to_string(), Struct { fields }),
                ("a".to_string(), Struct::default()),
            ]
            .into(),
            ..Metadata::default()
        }
    }

    #[test]
    fn equal_metadata_encodes_to_equal_bytes_that_decode_as_it() {
        let keys = ["workload", "namespace", "app", "version", "cluster"];
        let cluster = |keys: &[&str]| Cluster {
            name: "c".into(),
            metadata: Some(metadata(keys)),
            ..Cluster::default()
        };
        let reversed: Vec<&str> = keys.iter().rev().copied().collect();
        let (one, other) = (cluster(&keys), cluster(&reversed));
        assert_eq!(encode_cluster(&one), encode_cluster(&other));
        assert_eq!(Cluster::decode(&*encode_cluster(&one)).unwrap(), one);

        use envoy_types::pb::envoy::config::endpoint::v3::{LbEndpoint, LocalityLbEndpoints};
        let assignment = ClusterLoadAssignment {
            cluster_name: "c".into(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![
                    LbEndpoint {
                        metadata: Some(metadata(&keys)),
                        ..LbEndpoint::default()
                    },
                    LbEndpoint::default(),
                ],
                priority: 1,
                ..LocalityLbEndpoints::default()
            }],
            ..ClusterLoadAssignment::default()
        };
        let decoded = ClusterLoadAssignment::decode(&*encode_assignment(&assignment)).unwrap();
        assert_eq!(decoded, assignment);
    }
}
