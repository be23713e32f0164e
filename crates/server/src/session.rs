//! What both ADS protocols share for one connected proxy: identity, its current
//! resources, registration, and ACK/NACK bookkeeping with metrics.

use crate::generated::{Generated, short_type};
use crate::grpc::Requests;
use crate::metrics::{TypeLabel, VersionLabel};
use crate::registry::{ProxyStatus, TypeStatus};
use crate::service::{MeshState, Shared};
use envoy_types::pb::envoy::config::core::v3::Node;
use fleetmesh_ca::Identity;
use fleetmesh_xds::Proxy;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};
use tokio::sync::mpsc;
use tonic::Status;

pub struct Session {
    pub proxy: Proxy,
    pub id: u64,
    pub shared: Arc<Shared>,
    pub state: Arc<MeshState>,
    pub generated: Arc<Generated>,
    /// When the change now being pushed was made; cleared once everything is ACKed.
    converging_since: Option<Instant>,
    nonce: u64,
    /// Who the stream's token proved.
    caller: Identity,
}

impl Session {
    pub fn start(
        shared: Arc<Shared>,
        node: Option<&Node>,
        protocol: &'static str,
        caller: Identity,
    ) -> Result<Session, Status> {
        let node =
            node.ok_or_else(|| Status::invalid_argument("the first request must carry the node"))?;
        let proxy = Proxy::from_node(node).map_err(Status::invalid_argument)?;
        let state = shared.snapshots.borrow().clone();
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
        let generated = shared.generations.get(&state, &resolved);
        let id = shared.next_connection.fetch_add(1, Ordering::Relaxed);
        shared.registry.insert(
            id,
            ProxyStatus {
                proxy_id: proxy.id.clone(),
                proxy_version: proxy.istio_version.clone(),
                revision: resolved.labels.get("istio.io/rev").cloned(),
                connected_at: SystemTime::now(),
                protocol,
                types: Default::default(),
                resources: generated.clone(),
            },
        );
        shared
            .metrics
            .connected
            .get_or_create(&VersionLabel {
                version: proxy.istio_version.clone(),
            })
            .inc();
        tracing::info!(proxy = %proxy.id, connection = id, protocol, "proxy connected");
        Ok(Session {
            proxy,
            id,
            shared,
            state,
            generated,
            converging_since: Some(Instant::now()),
            nonce: 0,
            caller,
        })
    }

    /// Regenerates after a new snapshot; returns the previous resources when anything
    /// this proxy sees changed. A proxy that, as the new snapshot knows it (its Pod may
    /// have appeared or changed since it connected), is no longer the identity its token
    /// proved loses its stream; reconnecting, it is refused.
    pub fn refresh(&mut self) -> Result<Option<Arc<Generated>>, Gone> {
        let state = self.shared.snapshots.borrow().clone();
        if Arc::ptr_eq(&state, &self.state) {
            return Ok(None);
        }
        let resolved = self.proxy.resolved(&state.snapshot);
        check_identity(&resolved, &self.caller).map_err(|_| Gone)?;
        let generated = self.shared.generations.get(&state, &resolved);
        let created = state.created;
        self.state = state;
        if Arc::ptr_eq(&generated, &self.generated) || *generated == *self.generated {
            return Ok(None);
        }
        self.converging_since.get_or_insert(created);
        let previous = std::mem::replace(&mut self.generated, generated.clone());
        self.shared
            .registry
            .update(self.id, |s| s.resources = generated);
        Ok(Some(previous))
    }

    pub fn next_nonce(&mut self) -> String {
        self.nonce += 1;
        format!("{}-{}", self.id, self.nonce)
    }

    pub fn record_sent(&self, type_url: &str, version: &str, nonce: &str, bytes: usize) {
        let label = TypeLabel {
            r#type: short_type(type_url).to_string(),
        };
        self.shared.metrics.pushes.get_or_create(&label).inc();
        self.shared
            .metrics
            .pushed_bytes
            .get_or_create(&label)
            .inc_by(bytes as u64);
        self.shared.registry.update(self.id, |s| {
            let status = s.types.entry(short_type(type_url)).or_default();
            status.sent_version = version.to_string();
            status.sent_nonce = nonce.to_string();
        });
    }

    /// Records an ACK; when nothing sent is still unacknowledged, the proxy has converged.
    pub fn record_ack(&mut self, type_url: &str, version: &str) {
        let mut all_acked = false;
        self.shared.registry.update(self.id, |s| {
            s.types
                .entry(short_type(type_url))
                .or_default()
                .acked_version = version.to_string();
            all_acked = s
                .types
                .values()
                .all(|t: &TypeStatus| t.sent_version == t.acked_version);
        });
        if all_acked && let Some(since) = self.converging_since.take() {
            self.shared
                .metrics
                .convergence
                .observe(since.elapsed().as_secs_f64());
        }
    }

    /// A reconnecting proxy already holds `version` (delta's initial resource versions):
    /// nothing needs sending, and it counts as ACKed.
    pub fn record_in_sync(&mut self, type_url: &str, version: &str) {
        self.shared.registry.update(self.id, |s| {
            let status = s.types.entry(short_type(type_url)).or_default();
            status.sent_version = version.to_string();
        });
        self.record_ack(type_url, version);
    }

    pub fn record_nack(&self, type_url: &str, message: &str) {
        tracing::warn!(proxy = %self.proxy.id, r#type = short_type(type_url), error = message, "proxy rejected config (NACK)");
        self.shared
            .metrics
            .rejects
            .get_or_create(&TypeLabel {
                r#type: short_type(type_url).to_string(),
            })
            .inc();
        self.shared.registry.update(self.id, |s| {
            s.types.entry(short_type(type_url)).or_default().last_nack = Some(message.to_string());
        });
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.shared.registry.remove(self.id);
        self.shared
            .metrics
            .connected
            .get_or_create(&VersionLabel {
                version: self.proxy.istio_version.clone(),
            })
            .dec();
        tracing::info!(proxy = %self.proxy.id, connection = self.id, "proxy disconnected");
    }
}

/// The stream ends: the proxy is gone (its response channel closed), or it is no longer
/// the identity its token proved.
pub struct Gone;

/// How one ADS protocol (state of the world, delta) handles a stream.
pub trait Protocol: Send + Sized {
    type Request: prost::Message + Default + Send + 'static;
    type Response: Send + 'static;
    /// `sotw` or `delta`, as the registry and logs name it.
    const NAME: &'static str;
    fn node(request: &Self::Request) -> Option<&Node>;
    fn new(session: Session, tx: mpsc::Sender<Result<Self::Response, Status>>) -> Self;
    fn session(&self) -> &Session;
    fn on_request(
        &mut self,
        request: Self::Request,
    ) -> impl Future<Output = Result<(), Gone>> + Send;
    fn on_snapshot(&mut self) -> impl Future<Output = Result<(), Gone>> + Send;
}

/// Serves one stream: identifies the proxy by its first request, then answers requests
/// and pushes new snapshots until the proxy leaves or meshd shuts down.
pub async fn serve<P: Protocol>(
    shared: Arc<Shared>,
    caller: Identity,
    mut requests: Requests<P::Request>,
    tx: mpsc::Sender<Result<P::Response, Status>>,
) {
    let Ok(Some(first)) = requests.message().await else {
        return;
    };
    let session = match Session::start(shared.clone(), P::node(&first), P::NAME, caller) {
        Ok(session) => session,
        Err(status) => {
            let _ = tx.send(Err(status)).await;
            return;
        }
    };
    let mut snapshots = shared.snapshots.clone();
    snapshots.mark_unchanged();
    let mut stream = P::new(session, tx);
    if stream.on_request(first).await.is_err() {
        return;
    }
    loop {
        let outcome = tokio::select! {
            request = requests.message() => match request {
                Ok(Some(request)) => stream.on_request(request).await,
                Ok(None) => break,
                Err(status) => {
                    tracing::debug!(proxy = %stream.session().proxy.id, %status, "stream ended");
                    break;
                }
            },
            changed = snapshots.changed() => match changed {
                Ok(()) => stream.on_snapshot().await,
                Err(_) => break,
            },
            () = shared.shutdown.cancelled() => break,
        };
        if outcome.is_err() {
            break;
        }
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
