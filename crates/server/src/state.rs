//! A published snapshot of the mesh, and which earlier ones it can be patched from.

use fleetmesh_model::{Change, PatchableChange, Snapshot};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// A published snapshot and when it was made (for convergence times).
#[derive(Debug, Clone)]
pub struct MeshState {
    /// What proxies are served from.
    pub snapshot: Arc<Snapshot>,
    /// When the change that produced it was made (for convergence times).
    pub created: Instant,
    /// Unique among the states of this process.
    pub id: u64,
    /// The recent states this one differs from only in endpoints and VirtualServices:
    /// each one's id and what changed since, nearest first. What was generated for them
    /// can be patched instead of generated again.
    lineage: Vec<(u64, PatchableChange)>,
}

/// How many earlier states a state remembers in its lineage.
const LINEAGE: usize = 16;

static NEXT_STATE: AtomicU64 = AtomicU64::new(1);

impl MeshState {
    /// The first state: nothing to patch from.
    pub fn new(snapshot: Snapshot) -> MeshState {
        MeshState {
            snapshot: Arc::new(snapshot),
            created: Instant::now(),
            id: NEXT_STATE.fetch_add(1, Ordering::Relaxed),
            lineage: Vec::new(),
        }
    }

    /// The state that follows this one with `snapshot`, or `None` when no proxy could
    /// tell the two apart (nothing to publish).
    pub fn next(&self, snapshot: Snapshot) -> Option<MeshState> {
        let change = snapshot.change_since(&self.snapshot);
        let mut next = MeshState::new(snapshot);
        match change {
            Change::None => return None,
            Change::Other => {}
            Change::Patchable(change) => {
                for (id, earlier) in self.lineage.iter().take(LINEAGE - 1) {
                    next.lineage.push((*id, earlier.then(&change)));
                }
                next.lineage.insert(0, (self.id, change));
            }
        }
        Some(next)
    }

    /// What changed since the state `id`, when only endpoints and VirtualServices did
    /// (and that state is recent).
    pub fn changed_since(&self, id: u64) -> Option<&PatchableChange> {
        self.lineage
            .iter()
            .find(|(earlier, _)| *earlier == id)
            .map(|(_, change)| change)
    }
}
