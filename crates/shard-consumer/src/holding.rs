//! One lease this worker holds: its counter and checkpoint as last written, when a write
//! of ours last kept it alive, and whether it is lost. Shared by the renewer, the shard's
//! task and its checkpointer; no lock is held across a call to the lease table, so a
//! slow checkpoint never holds a renewal back.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::position::Checkpoint;

/// A held lease.
#[derive(Debug)]
pub(crate) struct Holding {
    pub key: String,
    state: Mutex<State>,
    /// Cancelled when the lease is lost, too old by our own clock, or given up because
    /// the consumer stops on a failure: the shard's work stops without checkpointing.
    pub stop: CancellationToken,
}

#[derive(Debug)]
struct State {
    counter: u64,
    checkpoint: Checkpoint,
    /// When the last write of ours that landed was sent: the lease was ours then, and
    /// nobody can judge it expired before a failover time after it.
    alive_at: Instant,
    lost: bool,
}

/// The leases a worker holds, by shard.
pub(crate) type Holdings = Arc<Mutex<BTreeMap<String, Arc<Holding>>>>;

/// Locks a mutex that a panicking thread may have poisoned: its data is plain values,
/// always left consistent, so the poison is no reason to stop.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Holding {
    /// A lease taken at `counter` by a write sent at `sent_at`.
    pub fn new(key: &str, counter: u64, checkpoint: Checkpoint, sent_at: Instant) -> Arc<Self> {
        Arc::new(Self {
            key: key.to_string(),
            state: Mutex::new(State {
                counter,
                checkpoint,
                alive_at: sent_at,
                lost: false,
            }),
            stop: CancellationToken::new(),
        })
    }

    pub fn counter(&self) -> u64 {
        lock(&self.state).counter
    }

    pub fn checkpoint(&self) -> Checkpoint {
        lock(&self.state).checkpoint.clone()
    }

    /// A write of ours sent at `sent_at` landed and left the counter at `counter`.
    pub fn renewed(&self, counter: u64, sent_at: Instant) {
        let mut state = lock(&self.state);
        state.counter = state.counter.max(counter);
        state.alive_at = state.alive_at.max(sent_at);
    }

    /// The counter moved on by another write of ours (seen on a re-read).
    pub fn advanced(&self, counter: u64) {
        let mut state = lock(&self.state);
        state.counter = state.counter.max(counter);
    }

    /// A checkpoint write sent at `sent_at` landed.
    pub fn checkpointed(&self, counter: u64, checkpoint: Checkpoint, sent_at: Instant) {
        let mut state = lock(&self.state);
        state.counter = state.counter.max(counter);
        state.alive_at = state.alive_at.max(sent_at);
        state.checkpoint = checkpoint;
    }

    /// When the last write of ours that landed was sent.
    pub fn alive_at(&self) -> Instant {
        lock(&self.state).alive_at
    }

    /// Whether the lease may still be used at `now`: other workers take a lease only
    /// once its counter stood still for `failover` by their clocks, and they cannot have
    /// seen it move before our write was sent.
    pub fn is_current(&self, now: Instant, failover: Duration) -> bool {
        let state = lock(&self.state);
        !state.lost && now.saturating_duration_since(state.alive_at) < failover
    }

    /// The lease table says another worker has it (or nobody does).
    pub fn lose(&self) {
        lock(&self.state).lost = true;
        self.stop.cancel();
    }

    pub fn is_lost(&self) -> bool {
        lock(&self.state).lost
    }

    /// Stop the shard's work without losing the lease (the consumer stops on a failure
    /// and releases the lease after).
    pub fn abandon(&self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_lease_is_current_for_a_failover_time_after_the_last_write_of_ours_was_sent() {
        let failover = Duration::from_secs(10);
        let taken = Instant::now();
        let holding = Holding::new("s", 4, Checkpoint::TrimHorizon, taken);
        assert!(holding.is_current(taken + Duration::from_secs(9), failover));
        assert!(!holding.is_current(taken + failover, failover));
        // A renewal sent at 5 s that lands late still counts from 5 s.
        holding.renewed(5, taken + Duration::from_secs(5));
        assert!(holding.is_current(taken + Duration::from_secs(14), failover));
        assert!(!holding.is_current(taken + Duration::from_secs(15), failover));
        // A re-read that shows our own checkpoint moved the counter proves nothing about time.
        holding.advanced(9);
        assert_eq!(holding.counter(), 9);
        assert_eq!(holding.alive_at(), taken + Duration::from_secs(5));
        // Counters never move back.
        holding.renewed(7, taken + Duration::from_secs(6));
        assert_eq!(holding.counter(), 9);
        holding.lose();
        assert!(holding.is_lost() && holding.stop.is_cancelled());
        assert!(!holding.is_current(taken, failover));
    }
}
