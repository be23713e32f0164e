//! State-of-the-world ADS: every response carries the whole set of its type, except
//! pushes of changed endpoints, which carry only those.
//!
//! Make-before-break: a CDS push keeps the clusters it drops until the proxy has ACKed
//! the listeners and routes that stopped using them; EDS follows every CDS push so that
//! new or updated clusters warm at once.

use crate::generated::{Entry, TypeResources};
use crate::grpc::{Framed, Replies};
use crate::session::{Protocol, Session, StreamEnd};
use crate::subscribed::Subscribed;
use crate::subscription::Subscriptions;
use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
use fleetmesh_xds::ResourceType;
use std::sync::Arc;
use std::time::Instant;

/// A `DiscoveryRequest` as meshd reads it (same tags as Envoy's proto). Envoy repeats
/// every requested name in each ACK, a thousand EDS names per sidecar in a large mesh;
/// decoded from the received bytes, they stay slices of them rather than a `String`
/// each, which under endpoint churn cost a quarter of meshd's CPU in allocations.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Request {
    #[prost(string, tag = "1")]
    pub version_info: String,
    #[prost(message, optional, tag = "2")]
    pub node: Option<Node>,
    #[prost(bytes = "bytes", repeated, tag = "3")]
    pub resource_names: Vec<Bytes>,
    #[prost(string, tag = "4")]
    pub type_url: String,
    #[prost(string, tag = "5")]
    pub response_nonce: String,
    #[prost(message, optional, tag = "6")]
    pub error_detail: Option<envoy_types::pb::google::rpc::Status>,
}

/// A response whose resources go out as their shared encodings (see [`Entry`]).
pub struct Response {
    /// Everything but the resources.
    fields: DiscoveryResponse,
    resources: Vec<Arc<Entry>>,
}

impl Response {
    fn encoded_len(&self) -> usize {
        prost::Message::encoded_len(&self.fields) + self.resources_len()
    }

    fn resources_len(&self) -> usize {
        self.resources.iter().map(|e| e.encoded().len()).sum()
    }
}

impl Framed for Response {
    fn into_chunks(self) -> Vec<Bytes> {
        let head = crate::grpc::frame(&self.fields, self.resources_len());
        std::iter::once(head)
            .chain(self.resources.iter().map(|e| e.encoded().clone()))
            .collect()
    }
}

/// What state of the world adds to a type's [`crate::subscription::Subscription`].
#[derive(Default)]
struct Sotw {
    /// A digest of the names the last request asked for: Envoy repeats them in every
    /// request (a thousand EDS names in a large mesh), and only a change matters.
    requested: u64,
    /// For the types a proxy asks for by name (endpoints, routes, secrets): those names,
    /// read when the digest changes. Responses carry only these.
    names: Option<Subscribed>,
    /// What the last response held (for CDS: to keep dropped clusters one round longer;
    /// for EDS: what changed since).
    sent: Arc<TypeResources>,
}

pub struct Stream {
    session: Session,
    subscriptions: Subscriptions<Sotw>,
    tx: Replies<Response>,
}

impl Protocol for Stream {
    type Request = Request;
    type Response = Response;
    const NAME: &'static str = "sotw";
    const ON_DEMAND: bool = false;

    fn node(request: &Request) -> Option<&Node> {
        request.node.as_ref()
    }

    fn new(session: Session, tx: Replies<Response>) -> Stream {
        Stream {
            session,
            subscriptions: Subscriptions::default(),
            tx,
        }
    }

    fn session(&self) -> &Session {
        &self.session
    }

    async fn on_request(&mut self, request: Request) -> Result<(), StreamEnd> {
        let Some(kind) = ResourceType::from_type_url(&request.type_url) else {
            tracing::debug!(proxy = %self.session.proxy.id, type_url = %request.type_url, "ignoring request for a type meshd does not serve");
            return Ok(());
        };
        let subscription = self.subscriptions.entry(kind);
        let answering = !request.response_nonce.is_empty();
        if answering && request.response_nonce != subscription.latest_nonce {
            // A reply to an older response; the proxy will answer the newest one too.
            return Ok(());
        }
        let requested = digest(&request.resource_names);
        let names_changed = subscription.protocol.requested != requested;
        subscription.protocol.requested = requested;
        if names_changed && kind.asked_by_name() {
            let names = request.resource_names.iter();
            let names = names.map(|n| String::from_utf8_lossy(n)).collect();
            subscription.protocol.names = Some(names);
        }
        subscription.answer(&request.response_nonce);
        if let Some(error) = &request.error_detail {
            let message = crate::session::nack_message(&error.message);
            subscription.nacked(message);
            self.session.record_nack(kind, message);
            self.session.record_status(&self.subscriptions);
            return Ok(());
        }
        if answering {
            subscription.acked(&request.version_info);
            self.session.record_status(&self.subscriptions);
            if !names_changed {
                return self.remove_held_clusters().await;
            }
        }
        // A first request, a reconnect, or a new set of names: answer with what we have.
        self.send(kind).await
    }

    async fn on_snapshot(&mut self) -> Result<(), StreamEnd> {
        let Some(previous) = self.session.refresh()? else {
            return Ok(());
        };
        let mut clusters_pushed = false;
        for kind in ResourceType::PUSH_ORDER {
            if !self.subscriptions.contains(kind) {
                continue;
            }
            let version = |g: &crate::Generated| g.of_type(kind).map(|t| t.version.clone());
            let changed = version(&previous) != version(&self.session.generated);
            let endpoints = kind == ResourceType::Endpoint;
            if endpoints && changed && !clusters_pushed {
                self.send_endpoint_changes().await?;
            } else if changed || (endpoints && clusters_pushed) {
                self.send(kind).await?;
                if kind == ResourceType::Cluster {
                    clusters_pushed = true;
                    self.expect_endpoints_of_sent_clusters();
                }
            }
        }
        self.remove_held_clusters().await
    }
}

impl Stream {
    /// The clusters just sent will have their endpoints asked for by name: they count as
    /// asked now, so that they warm with this push, before the routes that use them
    /// (the proxy's own request, when it comes, replaces the names).
    fn expect_endpoints_of_sent_clusters(&mut self) {
        let kind = ResourceType::Endpoint;
        let (Some(endpoints), true) = (
            self.session.generated.of_type(kind).cloned(),
            self.subscriptions.contains(kind),
        ) else {
            return;
        };
        let clusters = self
            .subscriptions
            .entry(ResourceType::Cluster)
            .protocol
            .sent
            .clone();
        if let Some(names) = &mut self.subscriptions.entry(kind).protocol.names {
            let with_endpoints = clusters.iter().filter(|(n, _)| endpoints.contains_key(n));
            for (name, _) in with_endpoints {
                names.insert(name);
            }
        }
    }

    /// Sends the dropped clusters' removal once the routes that used them are gone.
    async fn remove_held_clusters(&mut self) -> Result<(), StreamEnd> {
        if self.subscriptions.take_due_removals() {
            self.send_with(ResourceType::Cluster, false).await?;
        }
        Ok(())
    }

    async fn send(&mut self, kind: ResourceType) -> Result<(), StreamEnd> {
        self.send_with(kind, true).await
    }

    /// Sends only the endpoints that changed since the last response. Unlike listeners
    /// and clusters, Envoy keeps the assignments a state-of-the-world EDS response leaves
    /// out (istiod's incremental EDS relies on it too): one scaled Deployment costs each
    /// proxy one assignment, not the whole mesh's. After a cluster push, all are sent.
    async fn send_endpoint_changes(&mut self) -> Result<(), StreamEnd> {
        let started = Instant::now();
        let kind = ResourceType::Endpoint;
        let Some(current) = self.session.generated.of_type(kind).cloned() else {
            return Ok(());
        };
        let sotw = &mut self.subscriptions.entry(kind).protocol;
        let changed = self.session.context.changes.between(&sotw.sent, &current);
        let changed: Vec<Arc<Entry>> = changed
            .changed
            .iter()
            .filter(|(name, entry)| asked(&sotw.names, name, entry))
            .map(|(_, entry)| entry.clone())
            .collect();
        if changed.is_empty() {
            // Only removals, which a cluster push carries, or nothing the proxy asked
            // for: nothing to say.
            sotw.sent = current;
            return Ok(());
        }
        self.respond(kind, current, changed, started).await
    }

    /// Sends the whole set of `kind`; for clusters, `retain_dropped` keeps the ones this
    /// push would remove.
    async fn send_with(
        &mut self,
        kind: ResourceType,
        retain_dropped: bool,
    ) -> Result<(), StreamEnd> {
        let started = Instant::now();
        let Some(current) = self.session.generated.of_type(kind).cloned() else {
            return Ok(());
        };
        let before = &self.subscriptions.entry(kind).protocol.sent;
        let mut sent = current.clone();
        if kind == ResourceType::Cluster && retain_dropped {
            // Keep clusters this push drops; a CDS push after the LDS/RDS ACKs removes them.
            let dropped: Vec<_> = before
                .iter()
                .filter(|(name, _)| !current.contains_key(name))
                .map(|(n, e)| (n.clone(), e.clone()))
                .collect();
            if !dropped.is_empty() {
                self.subscriptions.hold_removals();
                let mut entries = current.to_map();
                entries.extend(dropped);
                sent = Arc::new(TypeResources::new(entries));
            }
        }
        let names = &self.subscriptions.entry(kind).protocol.names;
        let resources = sent
            .iter()
            .filter(|(name, entry)| asked(names, name, entry))
            .map(|(_, e)| e.clone())
            .collect();
        self.respond(kind, sent, resources, started).await
    }

    /// Sends `resources` as the version of `sent`, what the proxy then holds.
    async fn respond(
        &mut self,
        kind: ResourceType,
        sent: Arc<TypeResources>,
        resources: Vec<Arc<Entry>>,
        started: Instant,
    ) -> Result<(), StreamEnd> {
        let version = sent.version.clone();
        let nonce = self.session.next_nonce();
        let response = Response {
            fields: DiscoveryResponse {
                version_info: version.clone(),
                type_url: kind.type_url().to_string(),
                nonce: nonce.clone(),
                ..DiscoveryResponse::default()
            },
            resources,
        };
        let bytes = response.encoded_len();
        self.tx
            .send(Box::new(Ok(response)))
            .await
            .map_err(|_| StreamEnd::ProxyGone)?;
        self.session.record_sent(kind, bytes, started);
        let subscription = self.subscriptions.entry(kind);
        subscription.sent(nonce, version);
        subscription.protocol.sent = sent;
        self.session.record_status(&self.subscriptions);
        Ok(())
    }
}

/// Whether the resource `name` (`entry`) is among `names` (any, for a type not asked for
/// by name).
fn asked(names: &Option<Subscribed>, name: &str, entry: &Entry) -> bool {
    names
        .as_ref()
        .is_none_or(|names| names.contains(name, entry))
}

fn digest(names: &[Bytes]) -> u64 {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::with_seed(0).hash_one(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::Any;
    use fleetmesh_xds::{CLUSTER_TYPE, ENDPOINT_TYPE};
    use prost::Message;

    #[test]
    fn a_request_reads_as_envoy_sent_it() {
        let sent = envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest {
            version_info: "v1".into(),
            node: Some(Node {
                id: "sidecar~10.0.0.1~a.b~b.svc.cluster.local".into(),
                ..Node::default()
            }),
            resource_names: vec!["outbound|80||a.b".into(), "outbound|80||c.d".into()],
            type_url: ENDPOINT_TYPE.into(),
            response_nonce: "1-2".into(),
            error_detail: Some(envoy_types::pb::google::rpc::Status {
                code: 3,
                message: "bad".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let read = Request::decode(Bytes::from(sent.encode_to_vec())).unwrap();
        assert_eq!(read.version_info, sent.version_info);
        assert_eq!(read.node, sent.node);
        let names: Vec<&[u8]> = read.resource_names.iter().map(|n| n.as_ref()).collect();
        assert_eq!(names, [&b"outbound|80||a.b"[..], b"outbound|80||c.d"]);
        assert_eq!(read.type_url, sent.type_url);
        assert_eq!(read.response_nonce, sent.response_nonce);
        assert_eq!(read.error_detail, sent.error_detail);
    }

    #[test]
    fn a_response_from_shared_encodings_is_the_response() {
        let resources: Vec<Any> = (0..3)
            .map(|i| Any {
                type_url: CLUSTER_TYPE.into(),
                value: vec![i; 100 * i as usize],
            })
            .collect();
        let fields = DiscoveryResponse {
            version_info: "v1".into(),
            type_url: CLUSTER_TYPE.into(),
            nonce: "1-1".into(),
            ..DiscoveryResponse::default()
        };
        let response = Response {
            fields: fields.clone(),
            resources: resources
                .iter()
                .map(|r| Arc::new(Entry::new("c", r.clone())))
                .collect(),
        };
        let length = response.encoded_len();
        let bytes: Vec<u8> = response.into_chunks().concat();
        assert_eq!(bytes[0], 0);
        assert_eq!(
            u32::from_be_bytes(bytes[1..5].try_into().unwrap()) as usize,
            length
        );
        assert_eq!(bytes.len(), 5 + length);
        let decoded = DiscoveryResponse::decode(&bytes[5..]).unwrap();
        assert_eq!(
            decoded,
            DiscoveryResponse {
                resources,
                ..fields
            }
        );
    }
}
