//! What an application implements, and the checkpointer it is handed.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::lease_table::{LeaseTable, LeaseTableError};
use crate::position::{Checkpoint, CheckpointError, RecordPosition};

/// An error a processor returns; the consumer retries the same call after a backoff.
pub type ProcessorError = Box<dyn std::error::Error + Send + Sync>;

/// One read's records of one shard, in order.
#[derive(Debug)]
pub struct Batch<R> {
    pub shard_id: String,
    pub records: Vec<R>,
    pub millis_behind_latest: Option<i64>,
}

/// Processes the records of one shard while this worker holds its lease.
///
/// Delivery is at least once: after a crash or a lease move, records after the last
/// checkpoint are delivered again. A call that returns an error is retried with the
/// same records, so an error must mean "nothing was made durable that I would not
/// make durable again the same way".
pub trait RecordProcessor<R>: Send {
    /// The shard starts (after every parent shard was finished), at `checkpoint`.
    fn initialize(&mut self, _shard_id: &str, _checkpoint: &Checkpoint) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// New records. Make output durable, then checkpoint what is durable. The batch
    /// is lent, not given: a failed call is retried with the same batch, uncopied.
    fn process(
        &mut self,
        batch: &Batch<R>,
        checkpointer: &mut Checkpointer,
    ) -> impl Future<Output = Result<(), ProcessorError>> + Send;

    /// A read returned no records (called at most once per idle pause): the moment to
    /// flush what has waited long enough on a quiet shard. An error is logged and the
    /// next quiet read calls again.
    fn idle(&mut self, _checkpointer: &mut Checkpointer) -> impl Future<Output = Result<(), ProcessorError>> + Send {
        async { Ok(()) }
    }

    /// The shard is closed and every record was delivered: make everything durable.
    /// When this returns `Ok`, the consumer checkpoints SHARD_END and children start.
    fn shard_ended(
        &mut self,
        checkpointer: &mut Checkpointer,
    ) -> impl Future<Output = Result<(), ProcessorError>> + Send;

    /// The lease went to another worker; checkpoints will fail. Drop what is buffered.
    fn lease_lost(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// The worker is stopping: flush and checkpoint what can be, quickly.
    fn shutdown_requested(
        &mut self,
        checkpointer: &mut Checkpointer,
    ) -> impl Future<Output = Result<(), ProcessorError>> + Send;
}

/// Makes one processor per shard lease.
pub trait ProcessorFactory<R>: Send + Sync + 'static {
    type Processor: RecordProcessor<R> + 'static;
    fn create(&self, shard_id: &str) -> Self::Processor;
}

/// Why a checkpoint was not written.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointerError {
    #[error("the lease of shard {0} is lost: another worker owns it now")]
    LeaseLost(String),
    #[error(transparent)]
    Invalid(#[from] CheckpointError),
    #[error("checkpoint {position} is past the last delivered record {delivered:?}")]
    AheadOfDelivered {
        position: RecordPosition,
        delivered: Option<RecordPosition>,
    },
    #[error("checkpoint write failed: {0}")]
    Table(#[from] LeaseTableError),
}

/// The lease as held by this worker; renewals and checkpoints take turns on it.
#[derive(Debug)]
pub(crate) struct LeaseHold {
    pub counter: u64,
    pub checkpoint: Checkpoint,
    pub lost: bool,
}

pub(crate) type SharedHold = Arc<Mutex<LeaseHold>>;

/// Writes checkpoints for one held shard lease.
#[derive(Debug)]
pub struct Checkpointer {
    table: LeaseTable,
    shard_id: String,
    owner: String,
    hold: SharedHold,
    lost: CancellationToken,
    delivered: Option<RecordPosition>,
}

const CHECKPOINT_ATTEMPTS: u32 = 5;

impl Checkpointer {
    pub(crate) fn new(
        table: LeaseTable,
        shard_id: &str,
        owner: &str,
        hold: SharedHold,
        lost: CancellationToken,
    ) -> Self {
        Self {
            table,
            shard_id: shard_id.to_string(),
            owner: owner.to_string(),
            hold,
            lost,
            delivered: None,
        }
    }

    /// Whether this worker lost the lease (checkpoints fail from then on): stop retrying
    /// work whose only purpose is a checkpoint.
    pub fn is_lease_lost(&self) -> bool {
        self.lost.is_cancelled()
    }

    pub fn shard_id(&self) -> &str {
        &self.shard_id
    }

    /// The last delivered record's position.
    pub fn last_delivered(&self) -> Option<&RecordPosition> {
        self.delivered.as_ref()
    }

    pub(crate) fn delivered(&mut self, position: RecordPosition) {
        self.delivered = Some(position);
    }

    /// The checkpoint as last written.
    pub async fn current(&self) -> Checkpoint {
        self.hold.lock().await.checkpoint.clone()
    }

    /// Records that every record up to and including `position` is durable.
    pub async fn checkpoint(&mut self, position: &RecordPosition) -> Result<(), CheckpointerError> {
        if self.delivered.as_ref().is_none_or(|delivered| position > delivered) {
            return Err(CheckpointerError::AheadOfDelivered {
                position: position.clone(),
                delivered: self.delivered.clone(),
            });
        }
        self.write(|current| current.advanced_to(position.clone())).await
    }

    /// Checkpoints the last delivered record (everything handed over is durable).
    pub async fn checkpoint_delivered(&mut self) -> Result<(), CheckpointerError> {
        match self.delivered.clone() {
            Some(position) => self.checkpoint(&position).await,
            None => Ok(()),
        }
    }

    pub(crate) async fn checkpoint_shard_end(&mut self) -> Result<(), CheckpointerError> {
        self.write(|current| {
            if current.is_shard_end() {
                Err(CheckpointError::AfterShardEnd)
            } else {
                Ok(Checkpoint::ShardEnd)
            }
        })
        .await
    }

    async fn write(
        &mut self,
        next: impl Fn(&Checkpoint) -> Result<Checkpoint, CheckpointError>,
    ) -> Result<(), CheckpointerError> {
        let mut hold = self.hold.lock().await;
        if hold.lost {
            return Err(CheckpointerError::LeaseLost(self.shard_id.clone()));
        }
        let checkpoint = next(&hold.checkpoint)?;
        if checkpoint == hold.checkpoint {
            return Ok(());
        }
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
        let mut attempt = 1;
        loop {
            match self
                .table
                .checkpoint(&self.shard_id, &self.owner, hold.counter, &checkpoint)
                .await
            {
                Ok(counter) => {
                    hold.counter = counter;
                    hold.checkpoint = checkpoint;
                    return Ok(());
                }
                Err(error) if error.is_conflict() => {
                    hold.lost = true;
                    self.lost.cancel();
                    return Err(CheckpointerError::LeaseLost(self.shard_id.clone()));
                }
                Err(error) if error.is_retryable() && attempt < CHECKPOINT_ATTEMPTS => {
                    attempt += 1;
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                Err(error) => return Err(error.into()),
            }
        }
    }
}
