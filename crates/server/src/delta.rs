//! Delta (incremental) ADS: responses carry only what changed and what was removed.
//!
//! Same ordering rules as state of the world: cluster removals wait until listeners and
//! routes are ACKed; clusters added or changed get their endpoints pushed right after.

use crate::generated::{Entry, TypeResources};
use crate::grpc::Replies;
use crate::held::Held;
use crate::session::{Protocol, Session, StreamEnd};
use crate::subscribed::Subscribed;
use crate::subscription::Subscriptions;
use crate::virtual_hosts;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use fleetmesh_xds::ResourceType;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;
use tonic::Status;

/// Names a stream may hold of one type beyond the resources meshd has of it (names a
/// proxy subscribes to before they exist, or never will): a stream asking for more ends.
const EXTRA_NAMES: usize = 1_024;
/// No resource of meshd's has a longer name.
const MAX_NAME_BYTES: usize = 1_024;

/// What delta adds to a type's [`crate::subscription::Subscription`].
#[derive(Default)]
struct Delta {
    wildcard: bool,
    subscribed: Subscribed,
    /// What the proxy holds (of every type but virtual hosts).
    held: Held,
    /// Of virtual hosts (on demand), what the proxy holds: name → content hash (few:
    /// one per host its app called), and which subscribed names were answered.
    hosts: BTreeMap<String, String>,
    answered: virtual_hosts::Answered,
    /// Names were subscribed to, unsubscribed from or forgotten since the last diff:
    /// the next compares every name (otherwise only what changed in the set).
    resubscribed: bool,
    /// The versions the last diff was made against ([`diff_versions`]): a new snapshot
    /// that leaves them alone (most do, for most types) needs no diff, which would
    /// otherwise compare every name the proxy holds.
    diffed: Option<String>,
}

impl Delta {
    /// Subscribes to and unsubscribes from names of `kind`; whether what the proxy asks
    /// for changed.
    fn follow(
        &mut self,
        kind: ResourceType,
        subscribe: Vec<String>,
        unsubscribe: Vec<String>,
    ) -> bool {
        self.resubscribed |= !subscribe.is_empty() || !unsubscribe.is_empty();
        let mut changed = false;
        for name in subscribe {
            if kind == ResourceType::VirtualHost {
                // Envoy asks again for a host whose virtual host went: answer again.
                self.answered.asked(&name);
                changed = true;
            }
            if name == "*" {
                self.wildcard = true;
            } else if self.subscribed.insert(&name) {
                changed = true;
            }
        }
        for name in unsubscribe {
            if name == "*" {
                self.wildcard = false;
            }
            self.subscribed.remove(&name);
            self.held.forget(&name);
            self.hosts.remove(&name);
        }
        changed
    }
}

/// The versions a diff of `kind` depends on: its own and those it is answered with.
fn diff_versions(generated: &crate::Generated, kind: ResourceType) -> String {
    let version = |kind| generated.of_type(kind).map_or("", |t| t.version.as_str());
    match kind {
        ResourceType::Cluster => format!(
            "{}/{}",
            version(kind),
            version(ResourceType::OnDemandCluster)
        ),
        ResourceType::VirtualHost => format!("{}/{}", version(kind), version(ResourceType::Route)),
        _ => version(kind).to_string(),
    }
}

pub struct Stream {
    session: Session,
    subscriptions: Subscriptions<Delta>,
    tx: Replies<DeltaDiscoveryResponse>,
}

impl Protocol for Stream {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaDiscoveryResponse;
    const NAME: &'static str = "delta";
    const ON_DEMAND: bool = true;

    fn node(request: &DeltaDiscoveryRequest) -> Option<&Node> {
        request.node.as_ref()
    }

    fn new(session: Session, tx: Replies<DeltaDiscoveryResponse>) -> Stream {
        Stream {
            session,
            subscriptions: Subscriptions::default(),
            tx,
        }
    }

    fn session(&self) -> &Session {
        &self.session
    }

    async fn on_request(&mut self, request: DeltaDiscoveryRequest) -> Result<(), StreamEnd> {
        let Some(kind) = ResourceType::from_type_url(&request.type_url) else {
            return Ok(());
        };
        let first_of_type = !self.subscriptions.contains(kind);
        let subscription = self.subscriptions.entry(kind);
        if !request.response_nonce.is_empty() {
            let Some(version) = subscription.answer(&request.response_nonce) else {
                return Ok(()); // not ours or already answered
            };
            match &request.error_detail {
                Some(error) => {
                    let message = crate::session::nack_message(&error.message);
                    subscription.nacked(message);
                    self.session.record_nack(kind, message);
                }
                None => subscription.acked(&version),
            }
            self.session.record_status(&self.subscriptions);
        }
        let generated = &self.session.generated;
        let count = |kind| {
            generated
                .of_type(kind)
                .map_or(0, |t: &Arc<TypeResources>| t.len())
        };
        let names_held = match kind {
            ResourceType::Cluster => count(kind) + count(ResourceType::OnDemandCluster),
            _ => count(kind),
        };
        let names_allowed = names_held + EXTRA_NAMES;
        check_names(&request, names_allowed)?;
        let delta = &mut self.subscriptions.entry(kind).protocol;
        let wildcard_type = !kind.asked_by_name();
        if first_of_type {
            // Envoy's legacy wildcard: the first request of a wildcard type names nothing.
            delta.wildcard = wildcard_type && request.resource_names_subscribe.is_empty();
            let versions = request.initial_resource_versions.into_iter();
            if kind == ResourceType::VirtualHost {
                delta.subscribed = Subscribed::with_names();
                delta.hosts = versions.collect();
            } else {
                delta.held = Held::claimed(versions);
            }
        }
        delta.resubscribed |= first_of_type;
        let changed_subscription = delta.follow(
            kind,
            request.resource_names_subscribe,
            request.resource_names_unsubscribe,
        ) || first_of_type;
        if kind == ResourceType::VirtualHost {
            // An app may call any number of hosts the mesh does not know: their virtual
            // hosts are forgotten (and removed) past the bound, asked for again if called.
            if let Some(subscribed) = delta.subscribed.names_mut() {
                virtual_hosts::forget_unknown_hosts(
                    subscribed,
                    &delta.hosts,
                    &mut delta.answered,
                    names_allowed,
                );
            }
        }
        if delta.subscribed.len() > names_allowed {
            return Err(StreamEnd::Refused(Status::resource_exhausted(format!(
                "subscribed to {} {} names; meshd has {names_held}",
                delta.subscribed.len(),
                kind.short_name()
            ))));
        }
        if changed_subscription {
            self.send(kind, false).await?;
            let answered = !self.subscriptions.entry(kind).latest_nonce.is_empty();
            if first_of_type && !answered {
                // A reconnecting proxy already holds it all: nothing needs sending, and
                // what it holds counts as ACKed.
                let version = self
                    .session
                    .generated
                    .of_type(kind)
                    .map(|t| t.version.clone())
                    .unwrap_or_default();
                let status = &mut self.subscriptions.entry(kind).status;
                status.sent_version.clone_from(&version);
                status.acked_version = version;
                self.session.record_status(&self.subscriptions);
            }
        }
        self.remove_held_clusters().await
    }

    async fn on_snapshot(&mut self) -> Result<(), StreamEnd> {
        if self.session.refresh()?.is_none() {
            return Ok(());
        }
        for kind in ResourceType::PUSH_ORDER {
            if !self.subscriptions.contains(kind) {
                continue;
            }
            let versions = diff_versions(&self.session.generated, kind);
            let delta = &mut self.subscriptions.entry(kind).protocol;
            if delta.diffed.as_ref() == Some(&versions) {
                continue;
            }
            if kind == ResourceType::VirtualHost
                && holds_none_patched(delta, &self.session.generated)
            {
                delta.diffed = Some(versions);
                continue;
            }
            let touched = self.send(kind, false).await?;
            if kind == ResourceType::Cluster && !touched.is_empty() {
                // New or updated clusters warm on their endpoints: (re)send them.
                let endpoints = &mut self.subscriptions.entry(ResourceType::Endpoint).protocol;
                for name in touched {
                    endpoints.held.forget(&name);
                    endpoints.subscribed.insert(&name);
                }
                endpoints.diffed = None;
                endpoints.resubscribed = true;
            }
        }
        self.remove_held_clusters().await
    }
}

/// Whether the virtual hosts the stream last diffed were patched into the current ones
/// (a VirtualService edit, routes alone, the route configs as they were) without
/// touching any its proxy holds: then nothing is owed, and the thousands of streams
/// that do not hold the edited host skip the diff.
fn holds_none_patched(delta: &Delta, generated: &crate::Generated) -> bool {
    let Some((set, routes)) = delta.diffed.as_deref().and_then(|d| d.split_once('/')) else {
        return false;
    };
    let Some(current) = generated.of_type(ResourceType::VirtualHost) else {
        return false;
    };
    let routes_now = generated.of_type(ResourceType::Route);
    let Some((from, replaced)) = &current.patched_from else {
        return false;
    };
    from == set
        && routes_now.is_some_and(|r| r.version == routes)
        && !delta.hosts.keys().any(|name| replaced.contains(name))
}

/// Refuses a request naming more than `allowed` resources it holds, or a name no
/// resource could have: what a stream keeps of a proxy's names stays bounded.
fn check_names(request: &DeltaDiscoveryRequest, allowed: usize) -> Result<(), StreamEnd> {
    if request.initial_resource_versions.len() > allowed {
        return Err(StreamEnd::Refused(Status::resource_exhausted(format!(
            "{} initial resource versions; at most {allowed}",
            request.initial_resource_versions.len()
        ))));
    }
    let names = request
        .resource_names_subscribe
        .iter()
        .chain(&request.resource_names_unsubscribe)
        .chain(request.initial_resource_versions.keys());
    for name in names {
        if name.len() > MAX_NAME_BYTES {
            return Err(StreamEnd::Refused(Status::invalid_argument(format!(
                "a resource name of {} bytes; at most {MAX_NAME_BYTES}",
                name.len()
            ))));
        }
    }
    Ok(())
}

impl Stream {
    async fn remove_held_clusters(&mut self) -> Result<(), StreamEnd> {
        if self.subscriptions.take_due_removals() {
            self.send(ResourceType::Cluster, true).await?;
        }
        Ok(())
    }

    /// Sends what `kind` lacks on the proxy; returns the names sent. Cluster removals
    /// wait for `remove_clusters` (after LDS/RDS settled). A proxy that holds nothing of
    /// `kind` gets a first answer however empty (a gateway with no servers yet): Envoy
    /// is not ready until it has one.
    async fn send(
        &mut self,
        kind: ResourceType,
        remove_clusters: bool,
    ) -> Result<Vec<String>, StreamEnd> {
        let started = Instant::now();
        let generated = self.session.generated.clone();
        let Some(current) = generated.of_type(kind) else {
            return Ok(vec![]);
        };
        if !self.subscriptions.contains(kind) {
            return Ok(vec![]);
        }
        let subscription = self.subscriptions.entry(kind);
        let first_answer_owed = subscription.latest_nonce.is_empty()
            && subscription.protocol.held.is_empty()
            && subscription.protocol.hosts.is_empty();
        let delta = &mut subscription.protocol;
        delta.diffed = Some(diff_versions(&generated, kind));
        let mut hold = false;
        let (updated, removed) = if kind == ResourceType::VirtualHost {
            // Answers what was called, and keeps `known` itself.
            let routes = generated
                .of_type(ResourceType::Route)
                .cloned()
                .unwrap_or_default();
            let answer = virtual_hosts::answer(
                current,
                &routes,
                delta.subscribed.names().unwrap_or(&BTreeSet::new()),
                &mut delta.hosts,
                &mut delta.answered,
            );
            (answer.updated, answer.removed)
        } else {
            // An on-demand proxy's clusters it asks for by name, besides the others.
            let asked_only = (kind == ResourceType::Cluster)
                .then(|| generated.of_type(ResourceType::OnDemandCluster))
                .flatten();
            // The names as they were and one set, before and now: what changed in it
            // is all there is to look at.
            let last = match (delta.resubscribed, asked_only) {
                (false, None) => delta.held.last_set().cloned(),
                _ => None,
            };
            delta.resubscribed = false;
            let (wildcard, subscribed) = (delta.wildcard, &delta.subscribed);
            let wanted_entry =
                |name: &str, entry: &Entry| wildcard || subscribed.contains(name, entry);
            let (updated, mut removed) = match last {
                Some(last) => {
                    let changes = self.session.context.changes.between(&last, current);
                    delta
                        .held
                        .diff_changes(&changes, current.clone(), wanted_entry)
                }
                None => {
                    let wanted = current
                        .iter()
                        .filter(|(name, entry)| wanted_entry(name, entry))
                        .chain(asked_only.into_iter().flat_map(|set| {
                            set.iter()
                                .filter(|(name, entry)| subscribed.contains(name, entry))
                        }));
                    let sets = std::iter::once(current)
                        .chain(asked_only)
                        .cloned()
                        .collect();
                    delta.held.diff(wanted, sets)
                }
            };
            hold = kind == ResourceType::Cluster && !remove_clusters && !removed.is_empty();
            if hold {
                delta.held.keep(std::mem::take(&mut removed));
            }
            (updated, removed)
        };
        if hold {
            self.subscriptions.hold_removals();
        }
        if updated.is_empty() && removed.is_empty() && !first_answer_owed {
            return Ok(vec![]);
        }
        let nonce = self.session.next_nonce();
        let version = current.version.clone();
        let names: Vec<String> = updated.iter().map(|r| r.name.clone()).collect();
        let response = DeltaDiscoveryResponse {
            system_version_info: version.clone(),
            resources: updated,
            type_url: kind.type_url().to_string(),
            removed_resources: removed,
            nonce: nonce.clone(),
            ..DeltaDiscoveryResponse::default()
        };
        let bytes = prost::Message::encoded_len(&response);
        self.subscriptions.entry(kind).sent(nonce, version);
        self.tx
            .send(Box::new(Ok(response)))
            .await
            .map_err(|_| StreamEnd::ProxyGone)?;
        self.session.record_sent(kind, bytes, started);
        self.session.record_status(&self.subscriptions);
        Ok(names)
    }
}
