//! What a worker holds: its liveness (when its last heartbeat that landed was sent) and,
//! per lease, the counter and checkpoint as last written, whether the lease is lost or
//! being handed over. Shared by the heartbeat task, the shard's task and its
//! checkpointer; no lock is held across a call to the lease table.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::position::Checkpoint;

/// Locks a mutex that a panicking thread may have poisoned: its data is plain values,
/// always left consistent, so the poison is no reason to stop.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// When this worker's last heartbeat that landed was sent: others judge it dead only
/// once its heartbeat stood still for the failover time by their clocks, which cannot
/// start before that write was sent. Every lease it holds is good until then.
///
/// A heartbeat whose answer came back after that time may have landed too late: others
/// may have judged this worker dead and taken its leases meanwhile. Liveness then starts
/// a new era, and every lease held from an older era is no longer good, whatever the
/// heartbeats say from now on (a worker stalled past the failover time must not carry
/// on reading when it wakes).
#[derive(Debug)]
pub(crate) struct Liveness {
    failover: Duration,
    state: Mutex<LivenessState>,
}

#[derive(Debug, Default)]
struct LivenessState {
    alive_at: Option<Instant>,
    era: u64,
}

impl Liveness {
    pub fn new(failover: Duration) -> Self {
        Self {
            failover,
            state: Mutex::new(LivenessState::default()),
        }
    }

    /// A heartbeat sent at `sent` landed; its answer is back now.
    pub fn renewed(&self, sent: Instant) {
        let mut state = lock(&self.state);
        if let Some(at) = state.alive_at
            && Instant::now().saturating_duration_since(at) >= self.failover
        {
            state.era += 1;
        }
        state.alive_at = Some(state.alive_at.map_or(sent, |at| at.max(sent)));
    }

    pub fn era(&self) -> u64 {
        lock(&self.state).era
    }

    /// Whether others still see this worker alive at `now`.
    pub fn is_current(&self, now: Instant) -> bool {
        lock(&self.state)
            .alive_at
            .is_some_and(|at| now.saturating_duration_since(at) < self.failover)
    }

    /// Whether a lease held since era `era` is still good at `now`.
    fn holds(&self, era: u64, now: Instant) -> bool {
        let state = lock(&self.state);
        state.era == era
            && state
                .alive_at
                .is_some_and(|at| now.saturating_duration_since(at) < self.failover)
    }
}

/// A held lease.
#[derive(Debug)]
pub(crate) struct Holding {
    pub key: String,
    state: Mutex<State>,
    liveness: Arc<Liveness>,
    /// The liveness era the lease was taken in.
    era: u64,
    /// Cancelled when the lease is lost, or given up because the consumer stops on a
    /// failure: the shard's work stops without checkpointing.
    pub stop: CancellationToken,
    /// Cancelled when another worker asked for the lease and gets it: the shard flushes,
    /// checkpoints, and the lease is handed over.
    pub handing: CancellationToken,
}

#[derive(Debug)]
struct State {
    counter: u64,
    checkpoint: Checkpoint,
    lost: bool,
    /// A child waiting for its parents: no reading yet, so no load.
    waiting: bool,
    hand_to: Option<String>,
}

/// The leases a worker holds, by shard.
pub(crate) type Holdings = Arc<Mutex<BTreeMap<String, Arc<Holding>>>>;

impl Holding {
    /// A lease taken (or handed over) at `counter`, by a request sent in liveness era
    /// `era` (a break in liveness while it was under way means others may have it).
    pub fn new(key: &str, counter: u64, checkpoint: Checkpoint, liveness: Arc<Liveness>, era: u64) -> Arc<Self> {
        Arc::new(Self {
            key: key.to_string(),
            state: Mutex::new(State {
                counter,
                checkpoint,
                lost: false,
                waiting: false,
                hand_to: None,
            }),
            era,
            liveness,
            stop: CancellationToken::new(),
            handing: CancellationToken::new(),
        })
    }

    pub fn counter(&self) -> u64 {
        lock(&self.state).counter
    }

    pub fn checkpoint(&self) -> Checkpoint {
        lock(&self.state).checkpoint.clone()
    }

    /// The lease holds `checkpoint` at `counter`, written by us (this write, or an
    /// earlier one whose answer was lost).
    pub fn checkpointed(&self, counter: u64, checkpoint: Checkpoint) {
        let mut state = lock(&self.state);
        state.counter = state.counter.max(counter);
        state.checkpoint = checkpoint;
    }

    /// The counter moved on by another write of ours (seen on a re-read).
    pub fn advanced(&self, counter: u64) {
        let mut state = lock(&self.state);
        state.counter = state.counter.max(counter);
    }

    /// Whether the lease may still be used at `now`: ours, and this worker alive in
    /// others' eyes without a break since it was taken.
    pub fn is_current(&self, now: Instant) -> bool {
        !lock(&self.state).lost && self.liveness.holds(self.era, now)
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

    pub fn set_waiting(&self, waiting: bool) {
        lock(&self.state).waiting = waiting;
    }

    /// Whether the shard is read (or about to be): it counts toward this worker's load.
    pub fn is_working(&self) -> bool {
        let state = lock(&self.state);
        !state.lost && !state.waiting && state.hand_to.is_none()
    }

    /// Hand the lease to `to` once the shard has flushed.
    pub fn hand_off(&self, to: &str) {
        lock(&self.state).hand_to = Some(to.to_string());
        self.handing.cancel();
    }

    pub fn hand_to(&self) -> Option<String> {
        lock(&self.state).hand_to.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn leases_are_current_for_a_failover_time_after_the_last_heartbeat_that_landed_was_sent() {
        let failover = Duration::from_secs(10);
        let liveness = Arc::new(Liveness::new(failover));
        let t0 = Instant::now();
        let early = Holding::new("s", 4, Checkpoint::TrimHorizon, liveness.clone(), liveness.era());
        assert!(!early.is_current(t0), "no heartbeat yet: not alive");
        liveness.renewed(t0);
        let holding = Holding::new("s", 4, Checkpoint::TrimHorizon, liveness.clone(), liveness.era());
        assert!(holding.is_current(t0 + Duration::from_secs(9)));
        assert!(!holding.is_current(t0 + failover));
        // A heartbeat sent at 5 s that lands late still counts from 5 s; an older one
        // landing later moves nothing back.
        tokio::time::advance(Duration::from_secs(6)).await;
        liveness.renewed(t0 + Duration::from_secs(5));
        liveness.renewed(t0 + Duration::from_secs(2));
        assert!(holding.is_current(t0 + Duration::from_secs(14)));
        assert!(!holding.is_current(t0 + Duration::from_secs(15)));
        holding.advanced(9);
        holding.advanced(7);
        assert_eq!(holding.counter(), 9, "counters never move back");
        holding.hand_off("w2");
        assert!(holding.handing.is_cancelled() && !holding.is_working());
        assert_eq!(holding.hand_to().as_deref(), Some("w2"));
        holding.lose();
        assert!(holding.is_lost() && holding.stop.is_cancelled());
        assert!(!holding.is_current(t0 + Duration::from_secs(6)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_that_was_not_alive_for_a_while_holds_nothing_it_held_before() {
        let failover = Duration::from_secs(10);
        let liveness = Arc::new(Liveness::new(failover));
        liveness.renewed(Instant::now());
        let before = Holding::new("s", 1, Checkpoint::TrimHorizon, liveness.clone(), liveness.era());
        // A take sent now, whose answer comes back after the stall below.
        let take_sent_in = liveness.era();
        // Stalled past the failover time; then heartbeats land again.
        tokio::time::advance(Duration::from_secs(25)).await;
        let sent = Instant::now();
        liveness.renewed(sent);
        assert!(liveness.is_current(sent));
        assert!(!before.is_current(sent), "others may have taken it meanwhile");
        let late = Holding::new("s", 2, Checkpoint::TrimHorizon, liveness.clone(), take_sent_in);
        assert!(!late.is_current(sent), "taken before the break: others may have it too");
        let after = Holding::new("s", 3, Checkpoint::TrimHorizon, liveness.clone(), liveness.era());
        assert!(after.is_current(sent));
    }
}
