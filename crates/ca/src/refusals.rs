//! A budget of refused authentications per source address, and a log of refusals that a
//! flood cannot turn into a flood of lines. A client presenting bad token after bad
//! token (a flood, or guesses) soon has its new tokens turned away unchecked for a
//! while, so that it cannot make meshd ask the tenant's API server once per attempt;
//! distinct random tokens defeat a cache of refusals, not this. Accepted tokens cost
//! nothing, and a source's budget refills with time.
//!
//! Pods behind one NAT address share a budget: a pod flooding bad tokens delays the new
//! tokens of its neighbours behind the same address (they are told to retry, and tokens
//! already accepted stay accepted), never those of another cluster.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Refusals are logged at most once per this; the next line says how many were not.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Keeps a flood of refused calls from becoming a flood of log lines (which an
/// unauthenticated client could otherwise cause at will).
#[derive(Default)]
pub struct RefusalLog {
    /// When the last line was written, and the refusals not logged since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl RefusalLog {
    /// Logs a refusal of `what` (its `error`, from `peer`) unless one was logged less
    /// than [`LOG_EVERY`] ago; the line says how many were not logged before it.
    pub fn warn(&self, what: &str, error: &dyn std::fmt::Display, peer: Option<IpAddr>) {
        if let Some(unlogged) = self.admit_at(Instant::now()) {
            tracing::warn!(%error, ?peer, unlogged, "{what}");
        }
    }

    fn admit_at(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock();
        let (last, unlogged) = &mut *state;
        if last.is_some_and(|at| now.saturating_duration_since(at) < LOG_EVERY) {
            *unlogged += 1;
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(unlogged))
    }
}

/// Refusals a source may collect at once before its tokens wait.
const BURST: f64 = 32.0;
/// How fast a source's budget comes back: one refusal per this.
const REFILL: Duration = Duration::from_secs(1);
/// Sources remembered at most; past this, those whose budget is whole are forgotten.
const SOURCES: usize = 4_096;

/// What is left of each source's budget (an absent source has all of it).
#[derive(Default)]
pub struct RefusalBudget {
    sources: Mutex<HashMap<Option<IpAddr>, Left>>,
}

/// A source's budget as of an instant.
#[derive(Clone, Copy)]
struct Left {
    refusals: f64,
    at: Instant,
}

impl Left {
    fn now(self, now: Instant) -> f64 {
        let refilled = now.saturating_duration_since(self.at).as_secs_f64() / REFILL.as_secs_f64();
        (self.refusals + refilled).min(BURST)
    }
}

impl RefusalBudget {
    /// Whether a token from `source` may be checked now.
    pub fn allows(&self, source: Option<IpAddr>) -> bool {
        self.allows_at(source, Instant::now())
    }

    /// Counts a refused token against `source`.
    pub fn refused(&self, source: Option<IpAddr>) {
        self.refused_at(source, Instant::now());
    }

    fn allows_at(&self, source: Option<IpAddr>, now: Instant) -> bool {
        self.sources
            .lock()
            .get(&source)
            .is_none_or(|left| left.now(now) >= 1.0)
    }

    fn refused_at(&self, source: Option<IpAddr>, now: Instant) {
        let mut sources = self.sources.lock();
        if sources.len() >= SOURCES && !sources.contains_key(&source) {
            sources.retain(|_, left| left.now(now) < BURST);
            if sources.len() >= SOURCES {
                // Every remembered source is mid-flood: forgetting them all at once is
                // the bounded choice (each gets a fresh burst).
                sources.clear();
            }
        }
        let left = sources.entry(source).or_insert(Left {
            refusals: BURST,
            at: now,
        });
        *left = Left {
            refusals: (left.now(now) - 1.0).max(0.0),
            at: now,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_refusals_is_one_line_per_interval_with_a_count() {
        let log = RefusalLog::default();
        let start = Instant::now();
        assert_eq!(log.admit_at(start), Some(0));
        for _ in 0..1_000 {
            assert_eq!(log.admit_at(start + LOG_EVERY / 2), None);
        }
        assert_eq!(log.admit_at(start + LOG_EVERY), Some(1_000));
        assert_eq!(log.admit_at(start + LOG_EVERY * 3), Some(0));
    }

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([10, 0, 0, last]))
    }

    #[test]
    fn a_source_refused_a_burst_of_times_waits_and_others_do_not() {
        let budget = RefusalBudget::default();
        let start = Instant::now();
        for _ in 0..BURST as usize {
            assert!(budget.allows_at(ip(1), start));
            budget.refused_at(ip(1), start);
        }
        assert!(!budget.allows_at(ip(1), start), "its burst is spent");
        assert!(budget.allows_at(ip(2), start), "another source is not");
        assert!(budget.allows_at(None, start));
        assert!(
            !budget.allows_at(ip(1), start + REFILL / 2),
            "half a refill is not one"
        );
        assert!(
            budget.allows_at(ip(1), start + REFILL),
            "one more per refill"
        );
        budget.refused_at(ip(1), start + REFILL);
        assert!(!budget.allows_at(ip(1), start + REFILL));
    }

    #[test]
    fn memory_is_bounded_by_the_number_of_sources() {
        let budget = RefusalBudget::default();
        let start = Instant::now();
        for i in 0..(SOURCES as u32 * 3) {
            budget.refused_at(Some(IpAddr::from(i.to_be_bytes())), start);
        }
        assert!(budget.sources.lock().len() <= SOURCES);
    }
}
