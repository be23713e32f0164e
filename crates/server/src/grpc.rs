//! gRPC framing for ADS streams, written by hand so that every response is encoded into
//! an allocation of its own, freed once written, or (state of the world) written from
//! the resources' shared encodings without copying them per proxy.
//!
//! tonic's generated service encodes all the messages of a stream into one per-stream
//! buffer, which grows to the largest message and is never shrunk until the stream ends
//! (`BytesMut` keeps its allocation). Every proxy is sent its whole config once, so that
//! pinned one config's size per connected proxy: 1.5 GB for 1000 sidecars of a 1000-service
//! mesh (fleetmesh-bench). Requests are decoded here too, for the same reason (see
//! [`Requests`]).

use bytes::{Bytes, BytesMut};
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryResponse;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use tokio::sync::mpsc;
use tonic::Status;

/// The largest request a proxy may send.
const MAX_REQUEST_BYTES: usize = 16 << 20;

/// What a stream sends its proxy next: a response, or the status that ends the stream.
/// Boxed: a stream's queue allocates its slots in blocks of 32 whatever its bound, and
/// a response held inline (some 180 bytes) made that 5.6 KB per connected proxy.
pub type Reply<M> = Box<Result<M, Status>>;

/// Responses waiting for a slow proxy, per stream.
pub type Responses<M> = mpsc::Receiver<Reply<M>>;

/// Where a stream's responses go.
pub type Replies<M> = mpsc::Sender<Reply<M>>;

/// A stream's requests, read from its request body.
pub fn requests<T, B>(body: B) -> Requests<T>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    Requests {
        body: body.map_err(Into::into).boxed_unsync(),
        buffer: BytesMut::new(),
        ended: false,
        decoded: std::marker::PhantomData,
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The requests of one stream, decoded as they arrive. tonic's `Streaming` keeps its
/// buffer at the size of the largest request for the life of the stream; Envoy repeats
/// every subscribed name in each ACK (a thousand EDS names, some 80 KB, in a mesh of a
/// thousand services), so that pinned about 100 KiB per connected proxy. Here the buffer
/// is let go as soon as it holds no partial request.
pub struct Requests<T> {
    body: UnsyncBoxBody<Bytes, BoxError>,
    buffer: BytesMut,
    ended: bool,
    decoded: std::marker::PhantomData<fn() -> T>,
}

impl<T: prost::Message + Default> Requests<T> {
    /// The next request; `None` once the proxy closed its side. Cancel-safe: a frame is
    /// either taken whole into the buffer or left with the body.
    pub async fn message(&mut self) -> Result<Option<T>, Status> {
        loop {
            if let Some(request) = self.decode_buffered()? {
                return Ok(Some(request));
            }
            if self.ended {
                return match self.buffer.is_empty() {
                    true => Ok(None),
                    false => Err(Status::invalid_argument(
                        "the stream ended inside a request",
                    )),
                };
            }
            let body = &mut self.body;
            match std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.extend_from_slice(&data);
                    }
                }
                Some(Err(error)) => return Err(Status::from_error(error)),
                None => self.ended = true,
            }
        }
    }

    /// Takes one whole request off the buffer, if it holds one.
    fn decode_buffered(&mut self) -> Result<Option<T>, Status> {
        let Some(header) = self.buffer.get(..5) else {
            return Ok(None);
        };
        if header[0] != 0 {
            return Err(Status::unimplemented(
                "compressed requests are not accepted",
            ));
        }
        let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if length > MAX_REQUEST_BYTES {
            return Err(Status::resource_exhausted(format!(
                "a request of {length} bytes is over the limit of {MAX_REQUEST_BYTES}"
            )));
        }
        if self.buffer.len() < 5 + length {
            self.buffer.reserve(5 + length - self.buffer.len());
            return Ok(None);
        }
        let whole = self.buffer.split_to(5 + length);
        if self.buffer.is_empty() {
            // Let the allocation go with `whole`, rather than keep it for the next one.
            self.buffer = BytesMut::new();
        }
        // From `Bytes`, so that `bytes` fields are slices of it, not copies.
        T::decode(whole.freeze().slice(5..))
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("undecodable request: {e}")))
    }
}

/// A response as the pieces of its gRPC message frame, in order.
pub trait Framed: Send + 'static {
    fn into_chunks(self) -> Vec<Bytes>;
}

impl Framed for DeltaDiscoveryResponse {
    fn into_chunks(self) -> Vec<Bytes> {
        vec![frame(&self, 0)]
    }
}

/// A gRPC message frame (the uncompressed flag, the length) holding `message` and
/// `more` bytes that follow it.
pub fn frame<M: prost::Message>(message: &M, more: usize) -> Bytes {
    let length = message.encoded_len();
    let mut buf = Vec::with_capacity(5 + length);
    buf.push(0);
    buf.extend_from_slice(&((length + more) as u32).to_be_bytes());
    message.encode_raw(&mut buf);
    Bytes::from(buf)
}

/// Chunks go out joined up to this size: each body frame costs the HTTP/2 layer work,
/// and joining as they are written keeps the copies short-lived.
const WRITE_SIZE: usize = 64 << 10;

/// Takes the next body frame's bytes off `pending`: one chunk as it is, or several
/// small ones joined.
fn next_write(pending: &mut VecDeque<Bytes>) -> Option<Bytes> {
    let first = pending.pop_front()?;
    if first.len() >= WRITE_SIZE
        || pending
            .front()
            .is_none_or(|c| first.len() + c.len() > WRITE_SIZE)
    {
        return Some(first);
    }
    let mut joined = BytesMut::with_capacity(WRITE_SIZE);
    joined.extend_from_slice(&first);
    while pending
        .front()
        .is_some_and(|c| joined.len() + c.len() <= WRITE_SIZE)
    {
        joined.extend_from_slice(&pending.pop_front().unwrap_or_default());
    }
    Some(joined.freeze())
}

fn trailers(status: &Status) -> Frame<Bytes> {
    let mut headers = http::HeaderMap::new();
    if status.add_header(&mut headers).is_err() {
        headers.insert("grpc-status", http::HeaderValue::from_static("13"));
    }
    Frame::trailers(headers)
}

/// The response: each message as it comes, then the status as trailers.
pub fn respond<M: Framed>(responses: Responses<M>) -> http::Response<tonic::body::Body> {
    let start = (Some(responses), VecDeque::new());
    let frames = futures::stream::unfold(start, |(responses, mut pending)| async move {
        if let Some(bytes) = next_write(&mut pending) {
            return Some((Ok(Frame::data(bytes)), (responses, pending)));
        }
        let mut responses = responses?;
        let last = match responses.recv().await.map(|reply| *reply) {
            Some(Ok(message)) => {
                let mut pending = VecDeque::from(message.into_chunks());
                let bytes = next_write(&mut pending).unwrap_or_default();
                return Some((Ok(Frame::data(bytes)), (Some(responses), pending)));
            }
            Some(Err(status)) => trailers(&status),
            None => trailers(&Status::ok("")),
        };
        Some((Ok::<_, Infallible>(last), (None, pending)))
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
    use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
    use prost::Message;

    fn body(chunks: Vec<Vec<u8>>) -> Requests<DiscoveryRequest> {
        let frames = chunks
            .into_iter()
            .map(|c| Ok::<_, Infallible>(Frame::data(Bytes::from(c))));
        requests(http_body_util::StreamBody::new(futures::stream::iter(
            frames.collect::<Vec<_>>(),
        )))
    }

    fn request(version: &str) -> DiscoveryRequest {
        DiscoveryRequest {
            version_info: version.into(),
            resource_names: (0..1000).map(|i| format!("outbound|80||s{i}.ns")).collect(),
            ..DiscoveryRequest::default()
        }
    }

    #[tokio::test]
    async fn requests_split_or_joined_across_frames() {
        let (a, b) = (
            frame(&request("a"), 0).to_vec(),
            frame(&request("b"), 0).to_vec(),
        );
        // `a` in three pieces, the last sharing a frame with all of `b`.
        let chunks = vec![
            a[..3].to_vec(),
            a[3..1000].to_vec(),
            [&a[1000..], &b[..]].concat(),
        ];
        let mut requests = body(chunks);
        assert_eq!(requests.message().await.unwrap(), Some(request("a")));
        assert_eq!(requests.message().await.unwrap(), Some(request("b")));
        assert_eq!(
            requests.buffer.capacity(),
            0,
            "nothing kept between requests"
        );
        assert_eq!(requests.message().await.unwrap(), None);
    }

    #[tokio::test]
    async fn bad_requests_end_the_stream_with_a_status() {
        let whole = frame(&request("a"), 0).to_vec();
        let cut = body(vec![whole[..100].to_vec()]).message().await;
        assert_eq!(cut.unwrap_err().code(), tonic::Code::InvalidArgument);

        let mut compressed = whole.clone();
        compressed[0] = 1;
        let refused = body(vec![compressed]).message().await;
        assert_eq!(refused.unwrap_err().code(), tonic::Code::Unimplemented);

        let huge = [
            vec![0],
            (MAX_REQUEST_BYTES as u32 + 1).to_be_bytes().to_vec(),
        ]
        .concat();
        let refused = body(vec![huge]).message().await;
        assert_eq!(refused.unwrap_err().code(), tonic::Code::ResourceExhausted);

        let garbage = body(vec![vec![0, 0, 0, 0, 2, 0xff, 0xff]]).message().await;
        assert_eq!(garbage.unwrap_err().code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn small_chunks_are_joined_and_large_ones_go_as_they_are() {
        let chunk = |size: usize| Bytes::from(vec![7u8; size]);
        let mut pending = VecDeque::from([chunk(10), chunk(20), chunk(WRITE_SIZE), chunk(5)]);
        assert_eq!(next_write(&mut pending).unwrap().len(), 30);
        let large = pending.front().unwrap().clone();
        let written = next_write(&mut pending).unwrap();
        assert_eq!(written.as_ptr(), large.as_ptr(), "not copied");
        assert_eq!(next_write(&mut pending).unwrap().len(), 5);
        assert!(next_write(&mut pending).is_none());
    }

    #[test]
    fn a_frame_is_flag_length_message() {
        let response = DiscoveryResponse {
            version_info: "v1".into(),
            nonce: "1".into(),
            ..DiscoveryResponse::default()
        };
        let bytes = frame(&response, 0);
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
