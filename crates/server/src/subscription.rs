//! What one stream has sent of each resource type and what the proxy answered: one
//! record that both ADS protocols keep (each adding its own bookkeeping as `P`), that
//! decides convergence and the make-before-break order, and that `/debug/syncz` shows.

use fleetmesh_xds::ResourceType;
use std::collections::BTreeMap;

/// A type's versions on one stream, as the debug registry shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TypeStatus {
    /// The version of the newest response.
    pub sent_version: String,
    /// The version the proxy last ACKed.
    pub acked_version: String,
    /// The proxy's last NACK message, if it sent one.
    pub last_nack: Option<String>,
}

impl TypeStatus {
    /// The proxy ACKed the version last sent.
    pub fn acked(&self) -> bool {
        self.sent_version == self.acked_version
    }
}

/// Responses remembered unanswered per type; older ones are forgotten (bounded state
/// for a proxy that never answers).
const UNANSWERED: usize = 64;

/// One resource type on one stream.
#[derive(Default)]
pub struct Subscription<P> {
    pub status: TypeStatus,
    /// Nonce of the newest response.
    pub latest_nonce: String,
    /// Responses not yet answered, oldest first: nonce and version.
    unanswered: Vec<(String, String)>,
    /// The protocol's own bookkeeping (requested names, what the proxy holds, ...).
    pub protocol: P,
}

impl<P> Subscription<P> {
    /// A response of `version` went out as `nonce`.
    pub fn sent(&mut self, nonce: String, version: String) {
        self.status.sent_version.clone_from(&version);
        self.latest_nonce.clone_from(&nonce);
        if self.unanswered.len() >= UNANSWERED {
            // A proxy this far behind answers the newest response, which answers all.
            self.unanswered.remove(0);
        }
        self.unanswered.push((nonce, version));
    }

    /// The proxy answered `nonce`: its version, unless that response was answered before
    /// (or was never sent). Proxies answer in order, so the responses before it are
    /// answered too.
    pub fn answer(&mut self, nonce: &str) -> Option<String> {
        let at = self.unanswered.iter().position(|(n, _)| n == nonce)?;
        let (_, version) = self.unanswered.drain(..=at).next_back()?;
        Some(version)
    }

    /// The proxy accepted `version`: a NACK before it is history, no longer its state.
    pub fn acked(&mut self, version: &str) {
        self.status.acked_version = version.to_string();
        self.status.last_nack = None;
    }

    pub fn nacked(&mut self, message: &str) {
        self.status.last_nack = Some(message.to_string());
    }

    /// The proxy has answered everything and holds what was last sent.
    fn settled(&self) -> bool {
        self.unanswered.is_empty() && self.status.acked()
    }
}

/// Every type of one stream, and the cluster removals held back for make-before-break.
pub struct Subscriptions<P> {
    types: BTreeMap<ResourceType, Subscription<P>>,
    /// Clusters a push dropped were kept; they go once listeners and routes settle.
    removals_held: bool,
}

impl<P> Default for Subscriptions<P> {
    fn default() -> Self {
        Subscriptions {
            types: BTreeMap::new(),
            removals_held: false,
        }
    }
}

impl<P: Default> Subscriptions<P> {
    /// The type's record, new if the proxy had not asked for it yet.
    pub fn entry(&mut self, kind: ResourceType) -> &mut Subscription<P> {
        self.types.entry(kind).or_default()
    }

    pub fn contains(&self, kind: ResourceType) -> bool {
        self.types.contains_key(&kind)
    }

    /// Every version sent is ACKed: the proxy has converged.
    pub fn all_acked(&self) -> bool {
        self.types.values().all(|s| s.status.acked())
    }

    /// The types' statuses, for the debug registry.
    pub fn statuses(&self) -> BTreeMap<ResourceType, TypeStatus> {
        self.types
            .iter()
            .map(|(kind, s)| (*kind, s.status.clone()))
            .collect()
    }

    /// A cluster push kept clusters it dropped: remove them later.
    pub fn hold_removals(&mut self) {
        self.removals_held = true;
    }

    /// Whether held cluster removals may go now: the listeners and routes that used the
    /// dropped clusters (and an on-demand proxy's virtual hosts) are settled on the
    /// proxy. True once per hold.
    pub fn take_due_removals(&mut self) -> bool {
        let settled = [
            ResourceType::Listener,
            ResourceType::Route,
            ResourceType::VirtualHost,
        ]
        .iter()
        .all(|kind| self.types.get(kind).is_none_or(Subscription::settled));
        let due = self.removals_held && settled;
        if due {
            self.removals_held = false;
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_settles_its_response_and_those_before_it_once() {
        let mut s = Subscription::<()>::default();
        s.sent("1".into(), "a".into());
        s.sent("2".into(), "b".into());
        assert_eq!(s.latest_nonce, "2");
        assert_eq!(s.answer("2").as_deref(), Some("b"));
        assert_eq!(s.answer("1"), None, "answered with 2");
        assert_eq!(s.answer("2"), None, "answered already");
        assert!(!s.settled(), "not ACKed yet");
        s.acked("b");
        assert!(s.settled());
    }

    #[test]
    fn an_ack_after_a_nack_clears_it() {
        let mut s = Subscription::<()>::default();
        s.sent("n1".into(), "v1".into());
        s.answer("n1");
        s.nacked("bad listener");
        assert_eq!(s.status.last_nack.as_deref(), Some("bad listener"));
        s.sent("n2".into(), "v2".into());
        s.answer("n2");
        s.acked("v2");
        assert_eq!(
            s.status.last_nack, None,
            "/debug/syncz shows the proxy's current state"
        );
    }

    #[test]
    fn a_proxy_that_never_answers_costs_a_bounded_record() {
        let mut s = Subscription::<()>::default();
        for nonce in 0..UNANSWERED * 10 {
            s.sent(nonce.to_string(), "v".into());
        }
        assert_eq!(s.unanswered.len(), UNANSWERED);
        let newest = (UNANSWERED * 10 - 1).to_string();
        assert_eq!(s.answer(&newest).as_deref(), Some("v"));
        assert!(s.unanswered.is_empty(), "the newest answers them all");
    }

    #[test]
    fn held_removals_wait_for_listeners_and_routes() {
        let mut all = Subscriptions::<()>::default();
        all.entry(ResourceType::Listener)
            .sent("1".into(), "v1".into());
        all.hold_removals();
        assert!(!all.take_due_removals(), "listeners unanswered");
        let listeners = all.entry(ResourceType::Listener);
        listeners.answer("1");
        listeners.acked("v1");
        assert!(all.take_due_removals());
        assert!(!all.take_due_removals(), "once per hold");
    }
}
