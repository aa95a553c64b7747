//! "Only one instance at a time does this": a single lease with the same renewal
//! and expiry rules as shard leases, handed over at once on a graceful stop.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::assignment::{ExpiryTracker, renewal_overdue};
use crate::lease::Lease;
use crate::lease_table::{LeaseTable, LeaseTableError};
use crate::position::Checkpoint;

/// A named job lease in a lease table.
#[derive(Debug, Clone)]
pub struct SingletonLease {
    table: LeaseTable,
    key: String,
    worker_id: String,
    failover: Duration,
    /// Create the lease table when it is missing.
    create_table: bool,
}

/// Proof of holding the singleton lease; renewed in the background until released.
#[derive(Debug)]
pub struct SingletonGuard {
    table: LeaseTable,
    key: String,
    worker_id: String,
    /// Cancelled when the lease is lost: stop the job at once.
    pub lost: CancellationToken,
    stop: CancellationToken,
    renewer: Option<JoinHandle<Option<u64>>>,
}

impl SingletonLease {
    /// The lease `key` in `table`; the table is created when missing unless
    /// [`SingletonLease::creating_table`] says otherwise.
    pub fn new(table: LeaseTable, key: &str, worker_id: &str, failover: Duration) -> Self {
        Self {
            table,
            key: key.to_string(),
            worker_id: worker_id.to_string(),
            failover,
            create_table: true,
        }
    }

    /// Whether a missing lease table is created (`true`) or stops the job (`false`).
    pub fn creating_table(mut self, create: bool) -> Self {
        self.create_table = create;
        self
    }

    /// Waits until this worker holds the lease; `None` if `shutdown` came first.
    pub async fn acquire(&self, shutdown: &CancellationToken) -> Result<Option<SingletonGuard>, LeaseTableError> {
        let mut tracker = ExpiryTracker::default();
        let mut table_ready = false;
        loop {
            if shutdown.is_cancelled() {
                return Ok(None);
            }
            // A throttled or failed call is retried at the next round: losing the race
            // for a singleton must never stop the service. Other errors (a missing
            // permission, a malformed lease) are reported to the caller.
            match self.try_take(&mut tracker, &mut table_ready).await {
                Ok(Some(counter)) => {
                    tracing::info!(lease = %self.key, worker_id = %self.worker_id, "singleton lease taken");
                    return Ok(Some(self.guard(counter)));
                }
                Ok(None) => {}
                Err(error) if error.is_retryable() => {
                    tracing::warn!(lease = %self.key, %error, "singleton lease not taken; trying again");
                }
                Err(error) => return Err(error),
            }
            tokio::select! {
                () = tokio::time::sleep(self.failover / 2) => {}
                () = shutdown.cancelled() => return Ok(None),
            }
        }
    }

    /// One round: the lease's counter if this worker took it, `None` if it is held.
    async fn try_take(
        &self,
        tracker: &mut ExpiryTracker,
        table_ready: &mut bool,
    ) -> Result<Option<u64>, LeaseTableError> {
        if !*table_ready {
            self.table.ensure_exists(self.create_table).await?;
            self.table
                .create(&Lease::new(&self.key, Checkpoint::TrimHorizon, Vec::new()))
                .await?;
            *table_ready = true;
        }
        let Some(lease) = self.table.get(&self.key).await? else {
            return Ok(None);
        };
        let expired = tracker.observe(std::slice::from_ref(&lease), Instant::now(), self.failover);
        let free =
            lease.owner.is_none() || expired.contains(&lease.key) || lease.owner.as_deref() == Some(&self.worker_id);
        if !free {
            return Ok(None);
        }
        match self.table.take(&lease, &self.worker_id).await {
            Ok(counter) => Ok(Some(counter)),
            Err(error) if error.is_condition_failed() => Ok(None),
            Err(error) => Err(error),
        }
    }

    fn guard(&self, counter: u64) -> SingletonGuard {
        let lost = CancellationToken::new();
        let stop = CancellationToken::new();
        let renewer = tokio::spawn(renew(self.clone(), counter, lost.clone(), stop.clone()));
        SingletonGuard {
            table: self.table.clone(),
            key: self.key.clone(),
            worker_id: self.worker_id.clone(),
            lost,
            stop,
            renewer: Some(renewer),
        }
    }
}

/// Renews every failover / 3; returns the last counter, or `None` once lost.
async fn renew(
    lease: SingletonLease,
    mut counter: u64,
    lost: CancellationToken,
    stop: CancellationToken,
) -> Option<u64> {
    let interval = lease.failover / 3;
    let mut last_renewed = Instant::now();
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = stop.cancelled() => return Some(counter),
        }
        match lease.table.renew(&lease.key, &lease.worker_id, counter).await {
            Ok(next) => {
                counter = next;
                last_renewed = Instant::now();
            }
            Err(error) if error.is_condition_failed() => break,
            Err(error) => {
                tracing::warn!(lease = %lease.key, %error, "singleton renewal failed");
                if renewal_overdue(last_renewed, interval, lease.failover) {
                    break;
                }
            }
        }
    }
    tracing::warn!(lease = %lease.key, "singleton lease lost");
    lost.cancel();
    None
}

impl SingletonGuard {
    /// Stops renewing and gives the lease up so another instance takes it at once.
    pub async fn release(mut self) {
        self.stop.cancel();
        let Some(renewer) = self.renewer.take() else { return };
        if let Ok(Some(counter)) = renewer.await {
            match self.table.release(&self.key, &self.worker_id, counter).await {
                Ok(()) => tracing::info!(lease = %self.key, "singleton lease released"),
                Err(error) => {
                    tracing::warn!(lease = %self.key, %error, "singleton release failed; it expires after the failover time")
                }
            }
        }
    }
}

/// A guard dropped without [`SingletonGuard::release`] (a failed job, a panic) stops
/// renewing: the lease expires after the failover time, as if the process had died.
impl Drop for SingletonGuard {
    fn drop(&mut self) {
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
        }
    }
}
