//! What both ADS protocols share for one connected proxy: identity, its current
//! resources, registration, metrics, and the loop that serves its stream.

use crate::context::{RouteDelivery, ServerContext};
use crate::generated::Generated;
use crate::grpc::{Replies, Requests};
use crate::metrics::{TypeLabel, VersionLabel};
use crate::registry::ProxyStatus;
use crate::state::MeshState;
use crate::subscription::Subscriptions;
use envoy_types::pb::envoy::config::core::v3::Node;
use fleetmesh_ca::Identity;
use fleetmesh_xds::{Proxy, ProxyKind, ResourceType};
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use tonic::Status;

pub struct Session {
    pub proxy: Proxy,
    pub id: u64,
    pub context: Arc<ServerContext>,
    pub state: Arc<MeshState>,
    pub generated: Arc<Generated>,
    /// When the change now being pushed was made; cleared once everything is ACKed.
    converging_since: Option<Instant>,
    nonce: u64,
    /// Who the stream's token proved.
    caller: Identity,
    /// Its `fleetmesh_proxy_clients` series, as counted when it connected.
    client_labels: crate::metrics::ProxyClientLabels,
    /// Its `pilot_xds` series, as counted when it connected.
    version_label: VersionLabel,
}

impl Session {
    pub fn start<P: Protocol>(
        context: Arc<ServerContext>,
        node: Option<&Node>,
        caller: Identity,
    ) -> Result<Session, Status> {
        let protocol = P::NAME;
        let node =
            node.ok_or_else(|| Status::invalid_argument("the first request must carry the node"))?;
        let mut proxy =
            Proxy::from_node(node).map_err(|e| Status::invalid_argument(e.to_string()))?;
        // VHDS exists only in delta xDS, and only sidecars' routes are the mesh's.
        proxy.on_demand = context.routes == RouteDelivery::OnDemand
            && P::ON_DEMAND
            && proxy.kind == ProxyKind::Sidecar;
        let state = context.snapshots.borrow().clone();
        if let Err(pod) = proxy.workload(&state.snapshot) {
            tracing::warn!(
                proxy = %proxy.id,
                pod = %pod.name,
                pod_ip = ?pod.ip,
                addresses = ?proxy.ips,
                "the proxy names a Pod whose IP is none of its addresses: served as a workload of its own"
            );
        }
        let resolved = proxy.resolved(&state.snapshot);
        check_identity(&resolved, &caller)?;
        let generated = context.generations.get(&state, &resolved);
        if let Some(cluster) = context.cluster.as_deref()
            && proxy.cluster_id != cluster
        {
            return Err(Status::permission_denied(format!(
                "the proxy's node says cluster {:?}, its stream cluster {cluster:?}",
                proxy.cluster_id
            )));
        }
        let id = context.registry.next_id();
        context.registry.insert(
            id,
            ProxyStatus {
                proxy_id: proxy.id.clone(),
                proxy_version: proxy.istio_version.clone(),
                proxy_type: match proxy.kind {
                    ProxyKind::Sidecar => "sidecar",
                    ProxyKind::Router => "router",
                },
                cluster_id: proxy.cluster_id.clone(),
                revision: resolved.labels.get("istio.io/rev").cloned(),
                connected_at: SystemTime::now(),
                protocol,
                types: Default::default(),
                resources: generated.clone(),
            },
        );
        let version_label = context.metrics.version_label(&proxy.istio_version);
        context
            .metrics
            .connected
            .get_or_create(&version_label)
            .inc();
        let revision = resolved.labels.get("istio.io/rev").map(String::as_str);
        let client_labels =
            context
                .metrics
                .proxy_client_labels(&proxy.cluster_id, revision, &proxy.istio_version);
        context
            .metrics
            .proxy_clients
            .get_or_create(&client_labels)
            .inc();
        tracing::info!(proxy = %proxy.id, connection = id, protocol, "proxy connected");
        Ok(Session {
            proxy,
            id,
            context,
            state,
            generated,
            converging_since: Some(Instant::now()),
            nonce: 0,
            caller,
            client_labels,
            version_label,
        })
    }

    /// Regenerates after a new snapshot; returns the previous resources when anything
    /// this proxy sees changed. A proxy that, as the new snapshot knows it (its Pod may
    /// have appeared or changed since it connected), is no longer the identity its token
    /// proved loses its stream with PERMISSION_DENIED; reconnecting, it is refused.
    pub fn refresh(&mut self) -> Result<Option<Arc<Generated>>, StreamEnd> {
        let state = self.context.snapshots.borrow().clone();
        if Arc::ptr_eq(&state, &self.state) {
            return Ok(None);
        }
        let resolved = self.proxy.resolved(&state.snapshot);
        check_identity(&resolved, &self.caller).map_err(StreamEnd::Refused)?;
        let generated = self.context.generations.get(&state, &resolved);
        let created = state.created;
        self.state = state;
        if Arc::ptr_eq(&generated, &self.generated) || *generated == *self.generated {
            return Ok(None);
        }
        self.converging_since.get_or_insert(created);
        let previous = std::mem::replace(&mut self.generated, generated.clone());
        self.context
            .registry
            .update(self.id, |s| s.resources = generated);
        Ok(Some(previous))
    }

    pub fn next_nonce(&mut self) -> String {
        self.nonce += 1;
        format!("{}-{}", self.id, self.nonce)
    }

    /// Counts a response of `bytes` bytes, whose building began at `started`.
    pub fn record_sent(&self, kind: ResourceType, bytes: usize, started: Instant) {
        let label = TypeLabel {
            r#type: kind.short_name().to_string(),
        };
        let metrics = &self.context.metrics;
        metrics.pushes.get_or_create(&label).inc();
        metrics
            .pushed_bytes
            .get_or_create(&label)
            .inc_by(bytes as u64);
        metrics
            .config_size
            .get_or_create(&label)
            .observe(bytes as f64);
        metrics
            .push_time
            .get_or_create(&label)
            .observe(started.elapsed().as_secs_f64());
    }

    /// Logs and counts a NACK: a bug to fix, since meshd validates before it pushes.
    /// `message` is the proxy's: see [`nack_message`].
    pub fn record_nack(&self, kind: ResourceType, message: &str) {
        tracing::warn!(proxy = %self.proxy.id, r#type = kind.short_name(), error = message, "proxy rejected config (NACK)");
        self.context
            .metrics
            .rejects
            .get_or_create(&TypeLabel {
                r#type: kind.short_name().to_string(),
            })
            .inc();
    }

    /// Shows the stream's subscriptions in the registry; once everything sent is ACKed,
    /// the change being pushed has converged on this proxy.
    pub fn record_status<P: Default>(&mut self, subscriptions: &Subscriptions<P>) {
        let types = subscriptions.statuses();
        self.context.registry.update(self.id, |s| s.types = types);
        if subscriptions.all_acked()
            && let Some(since) = self.converging_since.take()
        {
            self.context
                .metrics
                .convergence
                .observe(since.elapsed().as_secs_f64());
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.context.registry.remove(self.id);
        self.context
            .metrics
            .connected
            .get_or_create(&self.version_label)
            .dec();
        self.context
            .metrics
            .proxy_clients
            .get_or_create(&self.client_labels)
            .dec();
        tracing::info!(proxy = %self.proxy.id, connection = self.id, "proxy disconnected");
    }
}

/// Why a stream ends before the proxy closes it.
#[derive(Debug)]
pub enum StreamEnd {
    /// The proxy is gone: its response channel closed.
    ProxyGone,
    /// meshd ends it with this status (the proxy is no longer the identity its token
    /// proved), which the proxy receives.
    Refused(Status),
}

/// How one ADS protocol (state of the world, delta) handles a stream.
pub trait Protocol: Send + Sized {
    type Request: prost::Message + Default + Send + 'static;
    type Response: Send + 'static;
    /// `sotw` or `delta`, as the registry and logs name it.
    const NAME: &'static str;
    /// Whether a proxy may ask for resources as it needs them (VHDS: delta only).
    const ON_DEMAND: bool;
    fn node(request: &Self::Request) -> Option<&Node>;
    fn new(session: Session, tx: Replies<Self::Response>) -> Self;
    fn session(&self) -> &Session;
    fn on_request(
        &mut self,
        request: Self::Request,
    ) -> impl Future<Output = Result<(), StreamEnd>> + Send;
    fn on_snapshot(&mut self) -> impl Future<Output = Result<(), StreamEnd>> + Send;
}

/// Serves one stream: identifies the proxy by its first request, then answers requests
/// and pushes new snapshots until the proxy leaves or meshd shuts down.
pub async fn serve<P: Protocol>(
    context: Arc<ServerContext>,
    caller: Identity,
    mut requests: Requests<P::Request>,
    tx: Replies<P::Response>,
) {
    let Ok(Some(first)) = requests.message().await else {
        return;
    };
    let session = match Session::start::<P>(context.clone(), P::node(&first), caller) {
        Ok(session) => session,
        Err(status) => {
            let _ = tx.send(Box::new(Err(status))).await;
            return;
        }
    };
    let mut snapshots = context.snapshots.clone();
    snapshots.mark_unchanged();
    let status = tx.clone();
    let mut stream = P::new(session, tx);
    // The work a request or a snapshot makes is boxed: inline, its state (kilobytes)
    // would be part of every stream's task while it waits, idle, for the next.
    let mut outcome = Box::pin(stream.on_request(first)).await;
    while outcome.is_ok() {
        outcome = tokio::select! {
            request = requests.message() => match request {
                Ok(Some(request)) => Box::pin(stream.on_request(request)).await,
                Ok(None) => break,
                Err(status) => {
                    tracing::debug!(proxy = %stream.session().proxy.id, %status, "stream ended");
                    break;
                }
            },
            changed = snapshots.changed() => match changed {
                Ok(()) => Box::pin(stream.on_snapshot()).await,
                Err(_) => break,
            },
            () = context.shutdown.cancelled() => break,
        };
    }
    if let Err(StreamEnd::Refused(refusal)) = outcome {
        let _ = status.send(Box::new(Err(refusal))).await;
    }
}

/// A proxy gets config only as the identity its token proved: its namespace and service
/// account (as its Pod has them, when meshd knows the Pod) must be the caller's.
fn check_identity(proxy: &Proxy, caller: &Identity) -> Result<(), Status> {
    if proxy.namespace == caller.namespace && proxy.service_account == caller.service_account {
        return Ok(());
    }
    tracing::warn!(
        proxy = %proxy.id,
        %caller,
        "refused a proxy whose identity is not the one its token proves"
    );
    Err(Status::permission_denied(format!(
        "proxy {} runs as {}/{}, but its token proves {caller}",
        proxy.id, proxy.namespace, proxy.service_account
    )))
}

/// The most of a NACK's message meshd keeps and logs: Envoy's own fit easily; a proxy
/// sending megabytes of it gets its first few KiB remembered.
const NACK_MESSAGE_BYTES: usize = 2048;

/// A proxy's NACK message, cut to [`NACK_MESSAGE_BYTES`] (on a character boundary).
pub fn nack_message(message: &str) -> &str {
    if message.len() <= NACK_MESSAGE_BYTES {
        return message;
    }
    let mut end = NACK_MESSAGE_BYTES;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message[..end]
}

#[cfg(test)]
mod nack_tests {
    #[test]
    fn nack_messages_are_bounded_on_a_character_boundary() {
        assert_eq!(super::nack_message("short"), "short");
        let long = "é".repeat(5000);
        let kept = super::nack_message(&long);
        assert!(kept.len() <= super::NACK_MESSAGE_BYTES && kept.len() > 2000);
        assert!(long.starts_with(kept));
    }
}
