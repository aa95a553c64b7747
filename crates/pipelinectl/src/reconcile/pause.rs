//! The pause of PlayerState's writers by lease: `reconcile-levels` takes the events
//! stage's shard leases and the pruner's singleton lease through the lease table's own
//! conditional take (on `leaseCounter`), renews each by its counter while it holds
//! them (the workers judge an owner without a worker entry by its counter, and take
//! back a lease whose counter stood still for their failover time), and releases them
//! at the end so the workers take them back at their next pass.
//!
//! A worker whose lease was taken learns it at its next lease write (a checkpoint, or
//! the pruner's renewal), which fails its condition: it stops the shard without
//! checkpointing, and the records after its checkpoint are read again after the
//! release (PlayerState only moves forward in event time, so a batch written twice
//! changes nothing the second time). Until then it may write one more batch: the pause
//! makes PlayerState quiet soon, not at once, and the correction does not rely on it
//! being quiet at any given moment (see [`super`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::lock;
use shard_consumer::LeaseTable;
use shard_consumer::backoff::Backoff;
use shard_consumer::lease::Lease;
use shard_consumer::lease_store::{AfterCondition, decide_after_condition};
use shard_consumer::lease_table::LeaseTableError;
use shard_consumer::position::Checkpoint;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Why the pause could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum PauseError {
    #[error("lease table {table}: {source}")]
    Table {
        table: String,
        #[source]
        source: LeaseTableError,
    },
    #[error(
        "lease {key} in {table} was not taken before the deadline (RECONCILE_TIMEOUT_SECS): its holder keeps moving its counter"
    )]
    Timeout { table: String, key: String },
}

/// A lease this process holds: where, and its counter as last written by us.
#[derive(Debug, Clone)]
struct Held {
    table: LeaseTable,
    key: String,
    counter: u64,
}

/// Settles a conditional lease write of `owner` that failed, from the lease as read
/// after (the consumer's own rule): its counter while still ours (our write landed and
/// its answer was lost, or an earlier one did), `None` once someone else's or nobody's.
fn ours(now: Option<&Lease>, owner: &str) -> Option<u64> {
    match decide_after_condition(now, owner) {
        AfterCondition::Held { counter, .. } => Some(counter),
        AfterCondition::Lost => None,
    }
}

/// The leases of a stage's lease table to take: every shard not finished (a finished
/// shard's lease is never read again, so its holder writes nothing).
pub fn to_take(leases: &[Lease]) -> Vec<&Lease> {
    leases.iter().filter(|l| !l.checkpoint.is_shard_end()).collect()
}

/// Leases held for the pause, renewed in the background until [`Pause::release`].
/// Dropped without a release (a panic), it releases them on a task of its own, best
/// effort; every path of `reconcile-levels` releases explicitly.
#[derive(Debug)]
pub struct Pause {
    owner: String,
    held: Arc<Mutex<Vec<Held>>>,
    stop_renewing: CancellationToken,
    renewer: Option<JoinHandle<()>>,
}

impl Pause {
    /// Starts holding nothing, renewing every `renew_interval` what is taken later.
    pub fn new(owner: &str, renew_interval: Duration) -> Self {
        let held: Arc<Mutex<Vec<Held>>> = Arc::default();
        let stop_renewing = CancellationToken::new();
        let renewer = tokio::spawn(renew(
            owner.to_string(),
            held.clone(),
            renew_interval,
            stop_renewing.clone(),
        ));
        Self {
            owner: owner.to_string(),
            held,
            stop_renewing,
            renewer: Some(renewer),
        }
    }

    /// The leases held now, as (table, key).
    pub fn held(&self) -> Vec<(String, String)> {
        lock(&self.held)
            .iter()
            .map(|h| (h.table.name().to_string(), h.key.clone()))
            .collect()
    }

    /// Takes every unfinished shard lease of `table`; returns how many were taken (a
    /// lease deleted while being taken is not counted: nothing reads its shard).
    pub async fn take_shards(&self, table: &LeaseTable, deadline: Instant) -> Result<usize, PauseError> {
        let leases = table.list().await.map_err(|source| table_error(table, source))?;
        if leases.is_empty() {
            // No events stage has ever run on this table (or it is the wrong table):
            // nothing is paused, and a worker starting now writes during the correction.
            tracing::warn!(
                table = table.name(),
                "no lease in the events stage's lease table: it pauses nothing (is PLAYER_STATE_LEASE_TABLE right?)"
            );
        }
        let mut taken = 0;
        for lease in to_take(&leases) {
            if self.take(table, lease.clone(), deadline).await? {
                taken += 1;
            }
        }
        Ok(taken)
    }

    /// Takes the singleton lease `key` of `table`, made first if it was never made (a
    /// pruner that never ran: it then waits for this process to let go).
    pub async fn take_singleton(&self, table: &LeaseTable, key: &str, deadline: Instant) -> Result<(), PauseError> {
        let lease = match table.get(key).await.map_err(|e| table_error(table, e))? {
            Some(lease) => lease,
            None => {
                table
                    .create(&Lease::new(key, Checkpoint::TrimHorizon, Vec::new()))
                    .await
                    .map_err(|e| table_error(table, e))?;
                table
                    .get(key)
                    .await
                    .map_err(|e| table_error(table, e))?
                    .ok_or_else(|| PauseError::Timeout {
                        table: table.name().to_string(),
                        key: key.to_string(),
                    })?
            }
        };
        if !self.take(table, lease, deadline).await? {
            // Deleted between the read and the take: nothing holds it, so nothing prunes
            // until a pruner makes it again, and then it waits for its own failover.
            tracing::warn!(
                table = table.name(),
                lease = key,
                "pruner lease deleted while being taken"
            );
        }
        Ok(())
    }

    /// Takes `lease` (as last read) by the table's conditional take; a holder that
    /// moved the counter meanwhile (a checkpoint) or a throttle makes it wait a little,
    /// read and try again. Returns whether it was taken (`false`: deleted meanwhile).
    async fn take(&self, table: &LeaseTable, mut lease: Lease, deadline: Instant) -> Result<bool, PauseError> {
        // A worker checkpointing every batch moves its counter a few times a second: a
        // pause between attempts lets a take land between two checkpoints, and eases a
        // throttled table.
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
        loop {
            let error = match table.take(&lease, &self.owner).await {
                Ok(counter) => {
                    self.hold(table, &lease.key, counter);
                    return Ok(true);
                }
                Err(error) if error.is_condition_failed() || error.is_retryable() => error,
                Err(source) => return Err(table_error(table, source)),
            };
            let timeout = || PauseError::Timeout {
                table: table.name().to_string(),
                key: lease.key.clone(),
            };
            if !error.is_condition_failed() {
                // Throttled or passing: wait before the re-read, too.
                sleep_before(deadline, backoff.next_delay())
                    .await
                    .map_err(|()| timeout())?;
            }
            let now = table.get(&lease.key).await.map_err(|e| table_error(table, e))?;
            if let Some(counter) = ours(now.as_ref(), &self.owner) {
                self.hold(table, &lease.key, counter);
                return Ok(true);
            }
            let Some(now) = now else {
                // Deleted (a finished shard cleaned up): nothing to pause there.
                return Ok(false);
            };
            tracing::debug!(table = table.name(), shard_id = %lease.key, %error, "lease moved while taking it; again");
            if error.is_condition_failed() {
                sleep_before(deadline, backoff.next_delay())
                    .await
                    .map_err(|()| timeout())?;
            }
            lease = now;
        }
    }

    fn hold(&self, table: &LeaseTable, key: &str, counter: u64) {
        tracing::info!(table = table.name(), lease = key, counter, "lease taken for the pause");
        lock(&self.held).push(Held {
            table: table.clone(),
            key: key.to_string(),
            counter,
        });
    }

    /// Stops renewing and gives every held lease up, so the workers take them at their
    /// next pass; returns how many were released. A lease that is no longer ours (lost
    /// during the pause) is left alone.
    pub async fn release(mut self) -> usize {
        self.stop_renewing.cancel();
        if let Some(renewer) = self.renewer.take() {
            let _ = renewer.await;
        }
        let held = std::mem::take(&mut *lock(&self.held));
        release_all(&self.owner, held).await
    }
}

impl Drop for Pause {
    fn drop(&mut self) {
        // After `release` nothing is held, so this gives nothing up twice.
        self.stop_renewing.cancel();
        let held = std::mem::take(&mut *lock(&self.held));
        if held.is_empty() {
            return;
        }
        tracing::warn!(
            leases = held.len(),
            "pause dropped without a release; releasing on a task"
        );
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let owner = self.owner.clone();
            runtime.spawn(async move {
                release_all(&owner, held).await;
            });
        }
    }
}

/// Sleeps `delay`, or fails when the deadline comes first.
async fn sleep_before(deadline: Instant, delay: Duration) -> Result<(), ()> {
    if Instant::now() + delay >= deadline {
        return Err(());
    }
    tokio::time::sleep(delay).await;
    Ok(())
}

fn table_error(table: &LeaseTable, source: LeaseTableError) -> PauseError {
    PauseError::Table {
        table: table.name().to_string(),
        source,
    }
}

/// Releases each lease; a failed condition is settled by a re-read (ours at another
/// counter: release at that one). Errors are logged: the workers take a lease whose
/// counter stands still for their failover time anyway.
async fn release_all(owner: &str, held: Vec<Held>) -> usize {
    const ATTEMPTS: u32 = 3;
    let mut released = 0;
    for mut lease in held {
        for attempt in 1..=ATTEMPTS {
            match lease.table.release(&lease.key, owner, lease.counter).await {
                Ok(()) => {
                    released += 1;
                    break;
                }
                Err(error) => match lease.table.get(&lease.key).await {
                    Ok(now) => match ours(now.as_ref(), owner) {
                        Some(counter) if attempt < ATTEMPTS => lease.counter = counter,
                        Some(_) => {
                            tracing::warn!(lease = %lease.key, %error, "lease not released; the workers take it after their failover time");
                        }
                        None => {
                            // Our release landed (its answer was lost), or the lease moved on.
                            released += usize::from(now.as_ref().is_some_and(|l| l.owner.is_none()));
                            break;
                        }
                    },
                    Err(reread) => {
                        tracing::warn!(lease = %lease.key, %error, %reread, "lease not released; the workers take it after their failover time");
                        break;
                    }
                },
            }
        }
    }
    released
}

/// Renews every held lease by its counter each `interval`, until `stop`.
async fn renew(owner: String, held: Arc<Mutex<Vec<Held>>>, interval: Duration, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let leases = lock(&held).clone();
        for lease in leases {
            if stop.is_cancelled() {
                return;
            }
            let counter = match lease.table.renew(&lease.key, &owner, lease.counter).await {
                Ok(counter) => Some(counter),
                Err(error) => match lease.table.get(&lease.key).await {
                    Ok(now) => match ours(now.as_ref(), &owner) {
                        Some(counter) => Some(counter),
                        None => {
                            tracing::warn!(lease = %lease.key, %error, "a paused lease was taken back: its shard runs again");
                            None
                        }
                    },
                    Err(reread) => {
                        tracing::warn!(lease = %lease.key, %error, %reread, "renewal failed; next interval");
                        Some(lease.counter)
                    }
                },
            };
            let mut all = lock(&held);
            match counter {
                Some(counter) => {
                    if let Some(h) = all
                        .iter_mut()
                        .find(|h| h.key == lease.key && h.table.name() == lease.table.name())
                    {
                        h.counter = counter;
                    }
                }
                None => all.retain(|h| !(h.key == lease.key && h.table.name() == lease.table.name())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shard_consumer::SequenceNumber;
    use shard_consumer::position::RecordPosition;

    fn lease(key: &str, owner: Option<&str>, counter: u64, checkpoint: Checkpoint) -> Lease {
        Lease {
            owner: owner.map(str::to_string),
            counter,
            ..Lease::new(key, checkpoint, Vec::new())
        }
    }

    #[test]
    fn finished_shards_are_not_paused() {
        let at = Checkpoint::At(RecordPosition {
            sequence: SequenceNumber::parse("42").expect("sequence"),
            subsequence: 0,
        });
        let leases = [
            lease("a", Some("w1"), 3, at),
            lease("b", None, 1, Checkpoint::ShardEnd),
            lease("c", None, 0, Checkpoint::TrimHorizon),
        ];
        let keys: Vec<&str> = to_take(&leases).iter().map(|l| l.key.as_str()).collect();
        assert_eq!(keys, ["a", "c"]);
    }

    #[test]
    fn a_failed_write_is_settled_by_who_holds_the_lease_now() {
        let me = "reconcile-levels:x";
        assert_eq!(
            ours(Some(&lease("a", Some(me), 7, Checkpoint::TrimHorizon)), me),
            Some(7),
            "our write landed and its answer was lost"
        );
        assert_eq!(
            ours(Some(&lease("a", Some("w1"), 8, Checkpoint::TrimHorizon)), me),
            None
        );
        assert_eq!(ours(Some(&lease("a", None, 8, Checkpoint::TrimHorizon)), me), None);
        assert_eq!(ours(None, me), None);
    }
}
