//! Any bytes as an xDS request off the wire, state of the world or delta: decoded or
//! refused, and the node of a decoded one served as meshd serves it, never a panic.
#![no_main]

mod common;

use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = DiscoveryRequest::decode(data)
        && let Some(node) = &request.node
    {
        common::serve(node);
    }
    if let Ok(request) = DeltaDiscoveryRequest::decode(data)
        && let Some(node) = &request.node
    {
        common::serve(node);
    }
});
