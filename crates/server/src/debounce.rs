//! Debounce: bursts of changes merge into one push, the first change after a quiet period
//! goes out at once, and no change waits longer than `max_delay` or is ever lost.

use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};

/// How change signals merge into rebuilds.
#[derive(Debug, Clone, Copy)]
pub struct Debounce {
    /// Quiet time after a change before the merged push.
    pub after: Duration,
    /// Longest a change may wait while changes keep coming.
    pub max_delay: Duration,
}

impl Debounce {
    /// Calls `push` for the changes arriving on `changes` until the channel closes, with
    /// the changes it merges (each handed to exactly one push). Every change is followed
    /// by a push that starts after it.
    pub async fn run<T>(
        self,
        mut changes: mpsc::UnboundedReceiver<T>,
        mut push: impl FnMut(Vec<T>),
    ) {
        loop {
            // Quiet: the first change goes out at once.
            let Some(first) = changes.recv().await else {
                return;
            };
            let mut merged = vec![first];
            drain(&mut changes, &mut merged);
            push(merged);
            // Busy: merge what follows until quiet for `after`, or `max_delay` has passed.
            loop {
                let mut merged = Vec::new();
                let mut first_pending: Option<Instant> = None;
                let mut deadline = Instant::now() + self.after;
                let closed = loop {
                    tokio::select! {
                        change = changes.recv() => match change {
                            Some(change) => {
                                merged.push(change);
                                let now = Instant::now();
                                let first = *first_pending.get_or_insert(now);
                                deadline = (now + self.after).min(first + self.max_delay);
                            }
                            None => break true,
                        },
                        () = sleep_until(deadline) => break false,
                    }
                };
                if first_pending.is_some() {
                    push(merged);
                }
                if closed {
                    return;
                }
                if first_pending.is_none() {
                    break;
                }
            }
        }
    }
}

fn drain<T>(changes: &mut mpsc::UnboundedReceiver<T>, into: &mut Vec<T>) {
    while let Ok(change) = changes.try_recv() {
        into.push(change);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;
    use std::sync::Arc;

    /// Feeds changes at the given offsets (ms) and returns them sorted, with the time
    /// (ms) of each push and the changes (their offsets) it merged.
    async fn pushes_for(offsets: &[u64], debounce: Debounce) -> (Vec<u64>, Vec<(u64, Vec<u64>)>) {
        let start = Instant::now();
        let (tx, rx) = mpsc::unbounded_channel();
        let pushes = Arc::new(Mutex::new(Vec::new()));
        let recorded = pushes.clone();
        let task = tokio::spawn(debounce.run(rx, move |merged| {
            recorded
                .lock()
                .push((start.elapsed().as_millis() as u64, merged));
        }));
        let mut sorted = offsets.to_vec();
        sorted.sort();
        for offset in &sorted {
            sleep_until(start + Duration::from_millis(*offset)).await;
            tx.send(*offset).unwrap();
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(debounce.max_delay * 2 + debounce.after * 2).await;
        drop(tx);
        task.await.unwrap();
        let pushes = pushes.lock().clone();
        (sorted, pushes)
    }

    fn times(pushes: &[(u64, Vec<u64>)]) -> Vec<u64> {
        pushes.iter().map(|(time, _)| *time).collect()
    }

    const DEBOUNCE: Debounce = Debounce {
        after: Duration::from_millis(100),
        max_delay: Duration::from_millis(1000),
    };

    #[tokio::test(start_paused = true)]
    async fn first_change_goes_out_at_once_and_bursts_merge() {
        let (_, pushes) = pushes_for(&[0, 10, 20, 30], DEBOUNCE).await;
        assert_eq!(pushes, vec![(0, vec![0]), (130, vec![10, 20, 30])]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_stream_is_not_starved() {
        let offsets: Vec<u64> = (0..100).map(|i| i * 50).collect();
        let (_, pushes) = pushes_for(&offsets, DEBOUNCE).await;
        let pushes = times(&pushes);
        for pair in pushes.windows(2) {
            assert!(
                pair[1] - pair[0] <= DEBOUNCE.max_delay.as_millis() as u64 + 50,
                "{pushes:?}"
            );
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, ..Default::default() })]
        #[test]
        fn no_change_is_ever_lost(offsets in proptest::collection::vec(0u64..3000, 1..40)) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
            let (changes, pushes) = runtime.block_on(pushes_for(&offsets, DEBOUNCE));
            let handed: Vec<u64> = pushes.iter().flat_map(|(_, merged)| merged.clone()).collect();
            proptest::prop_assert_eq!(&handed, &changes, "each change is handed to exactly one push, in order");
            let pushes = times(&pushes);
            for change in &changes {
                // Some push starts at or after the change, within the longest allowed wait.
                let served = pushes.iter().any(|p| p >= change && *p <= change + DEBOUNCE.max_delay.as_millis() as u64 + DEBOUNCE.after.as_millis() as u64);
                proptest::prop_assert!(served, "change at {change} not followed by a push: {pushes:?}");
            }
        }
    }
}
