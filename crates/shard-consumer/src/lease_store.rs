//! What the consumer needs from a lease table: one call per operation, each lease write
//! conditional on the counter read before it, plus the worker table beside it (one
//! entry per worker: its heartbeat, [`crate::membership`]). [`crate::LeaseTable`] is the
//! DynamoDB one; the deterministic simulation (`crates/consumer-sim`) has an in-memory one.
//!
//! A conditional failure never says by itself who won: the write may have been ours,
//! applied before its answer was lost and then retried. The callers re-read the lease
//! and decide from its owner and counter ([`decide_after_condition`]).

use futures::future::BoxFuture;

use crate::lease::Lease;
use crate::lease_table::LeaseTableError;
use crate::membership::WorkerEntry;
use crate::position::Checkpoint;

/// A lease table.
pub trait LeaseStore: Send + Sync + 'static {
    /// The table's name, for messages.
    fn name(&self) -> &str;

    /// Checks that the lease and worker tables exist; creates them when missing and
    /// `create` allows it.
    fn ensure_exists(&self, create: bool) -> BoxFuture<'_, Result<(), LeaseTableError>>;

    /// Every lease, read with strong consistency.
    fn list(&self) -> BoxFuture<'_, Result<Vec<Lease>, LeaseTableError>>;

    /// One lease, read with strong consistency.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Lease>, LeaseTableError>>;

    /// Writes a new lease unless one exists for the key; returns whether it wrote.
    fn create<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<bool, LeaseTableError>>;

    /// Takes `lease` (as last read) for `owner`; returns the new counter.
    fn take<'a>(&'a self, lease: &'a Lease, owner: &'a str) -> BoxFuture<'a, Result<u64, LeaseTableError>>;

    /// Writes a checkpoint of a lease `owner` holds at `counter`; returns the new counter.
    fn checkpoint<'a>(
        &'a self,
        key: &'a str,
        owner: &'a str,
        counter: u64,
        checkpoint: &'a Checkpoint,
    ) -> BoxFuture<'a, Result<u64, LeaseTableError>>;

    /// Hands a lease `owner` holds at `counter` to the worker `to`; returns the new counter.
    fn hand_off<'a>(
        &'a self,
        key: &'a str,
        owner: &'a str,
        counter: u64,
        to: &'a str,
    ) -> BoxFuture<'a, Result<u64, LeaseTableError>>;

    /// Gives a held lease up so another worker takes it at its next pass.
    fn release<'a>(&'a self, key: &'a str, owner: &'a str, counter: u64) -> BoxFuture<'a, Result<(), LeaseTableError>>;

    /// Deletes a finished lease (only while it is still at SHARD_END).
    fn delete_finished<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), LeaseTableError>>;

    /// Every worker's entry, read with strong consistency.
    fn workers(&self) -> BoxFuture<'_, Result<Vec<WorkerEntry>, LeaseTableError>>;

    /// Writes this worker's entry (its heartbeat).
    fn heartbeat<'a>(&'a self, entry: &'a WorkerEntry) -> BoxFuture<'a, Result<(), LeaseTableError>>;

    /// Deletes a worker's entry: one's own at a graceful stop, or a long-dead worker's,
    /// then only while its heartbeat still is `heartbeat`.
    fn remove_worker<'a>(
        &'a self,
        worker_id: &'a str,
        heartbeat: Option<u64>,
    ) -> BoxFuture<'a, Result<(), LeaseTableError>>;
}

/// What a re-read lease says about a write of `owner`'s that failed its condition or
/// whose answer was lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterCondition {
    /// `owner` holds the lease at this counter: the write was applied (or another of
    /// `owner`'s writes moved the counter); carry on from here.
    Held { counter: u64, checkpoint: Checkpoint },
    /// Someone else holds it, or nobody does, or it is gone.
    Lost,
}

/// Decides from a re-read lease whether `owner` still holds it.
pub fn decide_after_condition(lease: Option<&Lease>, owner: &str) -> AfterCondition {
    match lease {
        Some(lease) if lease.owner.as_deref() == Some(owner) => AfterCondition::Held {
            counter: lease.counter,
            checkpoint: lease.checkpoint.clone(),
        },
        _ => AfterCondition::Lost,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_re_read_lease_decides() {
        let mut lease = Lease::new("s", Checkpoint::TrimHorizon, Vec::new());
        lease.owner = Some("me".into());
        lease.counter = 8;
        assert_eq!(
            decide_after_condition(Some(&lease), "me"),
            AfterCondition::Held {
                counter: 8,
                checkpoint: Checkpoint::TrimHorizon
            },
            "our write was applied before its answer was lost"
        );
        assert_eq!(decide_after_condition(Some(&lease), "other"), AfterCondition::Lost);
        lease.owner = None;
        assert_eq!(decide_after_condition(Some(&lease), "me"), AfterCondition::Lost);
        assert_eq!(decide_after_condition(None, "me"), AfterCondition::Lost);
    }
}
