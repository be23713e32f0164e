//! The ADS gRPC service, routed by hand so that every response is encoded into an
//! allocation of its own, freed once written.
//!
//! tonic's generated service encodes all the messages of a stream into one per-stream
//! buffer, which grows to the largest message and is never shrunk until the stream ends
//! (`BytesMut` keeps its allocation). Every proxy is sent its whole config once, so that
//! pinned one config's size per connected proxy: 1.5 GB for 1000 sidecars of a 1000-service
//! mesh (fleetmesh-bench). Requests are still decoded by tonic.

use crate::service::XdsServer;
use bytes::Bytes;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use http_body::Frame;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::mpsc;
use tonic::codec::Codec;
use tonic::metadata::MetadataMap;
use tonic::{Status, Streaming};

const SOTW: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";
/// The largest request a proxy may send.
const MAX_REQUEST_BYTES: usize = 16 << 20;

/// Responses waiting for a slow proxy, per stream.
pub type Responses<M> = mpsc::Receiver<Result<M, Status>>;

#[derive(Clone)]
pub struct AdsService(pub XdsServer);

impl tonic::server::NamedService for AdsService {
    const NAME: &'static str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
}

impl<B> tower_service::Service<http::Request<B>> for AdsService
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let server = self.0.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let metadata = MetadataMap::from_headers(parts.headers);
            let opened = match parts.uri.path() {
                SOTW => server
                    .open_sotw(&metadata, requests::<DiscoveryRequest, B>(body))
                    .await
                    .map(respond),
                DELTA => server
                    .open_delta(&metadata, requests::<DeltaDiscoveryRequest, B>(body))
                    .await
                    .map(respond),
                other => Err(Status::unimplemented(format!("no method {other}"))),
            };
            Ok(opened.unwrap_or_else(Status::into_http))
        })
    }
}

fn requests<T, B>(body: B) -> Streaming<T>
where
    T: prost::Message + Default + Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    let mut codec = tonic_prost::ProstCodec::<DiscoveryRequest, T>::default();
    Streaming::new_request(codec.decoder(), body, None, Some(MAX_REQUEST_BYTES))
}

/// One gRPC message frame: the uncompressed flag, the length, the message.
fn frame<M: prost::Message>(message: &M) -> Bytes {
    let length = message.encoded_len();
    let mut buf = Vec::with_capacity(5 + length);
    buf.push(0);
    buf.extend_from_slice(&(length as u32).to_be_bytes());
    message.encode_raw(&mut buf);
    Bytes::from(buf)
}

fn trailers(status: &Status) -> Frame<Bytes> {
    let mut headers = http::HeaderMap::new();
    if status.add_header(&mut headers).is_err() {
        headers.insert("grpc-status", http::HeaderValue::from_static("13"));
    }
    Frame::trailers(headers)
}

/// The response: each message as it comes, then the status as trailers.
fn respond<M: prost::Message + 'static>(
    responses: Responses<M>,
) -> http::Response<tonic::body::Body> {
    let frames = futures::stream::unfold(Some(responses), |responses| async move {
        let mut responses = responses?;
        let last = match responses.recv().await {
            Some(Ok(message)) => return Some((Ok(Frame::data(frame(&message))), Some(responses))),
            Some(Err(status)) => trailers(&status),
            None => trailers(&Status::ok("")),
        };
        Some((Ok::<_, Infallible>(last), None))
    });
    let mut response = http::Response::new(tonic::body::Body::new(
        http_body_util::StreamBody::new(frames),
    ));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
    use prost::Message;

    #[test]
    fn a_frame_is_flag_length_message() {
        let response = DiscoveryResponse {
            version_info: "v1".into(),
            nonce: "1".into(),
            ..DiscoveryResponse::default()
        };
        let bytes = frame(&response);
        assert_eq!(bytes[0], 0, "not compressed");
        let length = u32::from_be_bytes(bytes[1..5].try_into().unwrap()) as usize;
        assert_eq!(length, bytes.len() - 5);
        assert_eq!(DiscoveryResponse::decode(&bytes[5..]).unwrap(), response);
        assert_eq!(
            bytes.len(),
            5 + response.encoded_len(),
            "an exact allocation"
        );
    }
}
