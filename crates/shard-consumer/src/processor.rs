//! What an application implements, and the checkpointer it is handed.

use std::future::Future;
use std::sync::Arc;

use pipeline_runtime::retry::{RetryError, RetryPolicy, retry};
use tokio_util::sync::CancellationToken;

use crate::error::{Classified, ErrorKind};
use crate::holding::Holding;
use crate::lease_store::{AfterCondition, LeaseStore, decide_after_condition};
use crate::lease_table::LeaseTableError;
use crate::position::{Checkpoint, CheckpointError, RecordPosition};

/// Why a processor could not take a batch, and what the consumer should do about it:
/// a throttled or transient error (or a failed condition the processor chose not to
/// settle) retries the same call after a backoff; a permanent or fatal one stops the
/// consumer, and with it the service, with the error. A processor quarantines the
/// records it cannot take itself; an error here is about the processor's own work.
#[derive(Debug, thiserror::Error)]
#[error("{source}")]
pub struct ProcessorError {
    kind: ErrorKind,
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl ProcessorError {
    pub fn new(kind: ErrorKind, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self {
            kind,
            source: source.into(),
        }
    }

    /// A failure of a request the processor made itself (an output write, a read of its
    /// own state), not one an input decided: a permanent one stops the consumer too.
    pub fn of_own_request<E: Classified + std::error::Error + Send + Sync + 'static>(error: E) -> Self {
        Self::new(error.kind().of_own_request(), error)
    }

    /// A failure this process cannot get past: the consumer stops with it.
    pub fn fatal(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::new(ErrorKind::Fatal, source)
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether the consumer should give up on the process rather than retry.
    pub fn stops_the_consumer(&self) -> bool {
        matches!(self.kind, ErrorKind::Permanent | ErrorKind::Fatal)
    }
}

impl<E: Classified + std::error::Error + Send + Sync + 'static> From<E> for ProcessorError {
    fn from(error: E) -> Self {
        Self {
            kind: error.kind(),
            source: Box::new(error),
        }
    }
}

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
/// checkpoint are delivered again. A call that returns a throttled or transient error
/// is retried with the same records, so an error must mean "nothing was made durable
/// that I would not make durable again the same way"; a permanent or fatal one stops
/// the consumer (a record that can never be processed is the processor's to quarantine).
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
    /// flush what has waited long enough on a quiet shard. A passing error is logged and
    /// the next quiet read calls again; a permanent or fatal one stops the consumer.
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
    #[error("the lease of shard {0} kept moving under this worker's renewals; the checkpoint is tried again")]
    Contended(String),
}

impl Classified for CheckpointerError {
    fn kind(&self) -> ErrorKind {
        match self {
            // The consumer sees the lost lease itself and stops the shard; retrying is harmless.
            CheckpointerError::LeaseLost(_) | CheckpointerError::Contended(_) => ErrorKind::Transient,
            // A checkpoint that would move back or past what was delivered is a bug.
            CheckpointerError::Invalid(_) | CheckpointerError::AheadOfDelivered { .. } => ErrorKind::Fatal,
            CheckpointerError::Table(error) => match error.kind() {
                // Our own request, not input: a permanent failure cannot be skipped.
                ErrorKind::Permanent => ErrorKind::Fatal,
                kind => kind,
            },
        }
    }
}

/// Writes checkpoints for one held shard lease.
pub struct Checkpointer {
    store: Arc<dyn LeaseStore>,
    shard_id: String,
    owner: String,
    holding: Arc<Holding>,
    delivered: Option<RecordPosition>,
    /// One checkpoint write at a time: two racing ones could land out of order.
    writing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Checkpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpointer")
            .field("shard_id", &self.shard_id)
            .field("owner", &self.owner)
            .field("delivered", &self.delivered)
            .finish_non_exhaustive()
    }
}

/// Why one checkpoint attempt did not settle.
#[derive(Debug, thiserror::Error)]
enum Attempt {
    /// The counter moved under another write of ours: try again with the new one.
    #[error("the lease counter moved under another write of ours")]
    CounterMoved,
    #[error("the lease is lost")]
    Lost,
    #[error(transparent)]
    Table(#[from] LeaseTableError),
}

impl Classified for Attempt {
    fn kind(&self) -> ErrorKind {
        match self {
            Attempt::CounterMoved => ErrorKind::Transient,
            Attempt::Lost => ErrorKind::ConditionFailed,
            Attempt::Table(error) => error.kind(),
        }
    }
}

impl Checkpointer {
    pub(crate) fn new(store: Arc<dyn LeaseStore>, shard_id: &str, owner: &str, holding: Arc<Holding>) -> Self {
        Self {
            store,
            shard_id: shard_id.to_string(),
            owner: owner.to_string(),
            holding,
            delivered: None,
            writing: tokio::sync::Mutex::new(()),
        }
    }

    /// Whether this worker lost the lease (checkpoints fail from then on): stop retrying
    /// work whose only purpose is a checkpoint.
    pub fn is_lease_lost(&self) -> bool {
        self.holding.stop.is_cancelled()
    }

    /// Cancelled when this worker loses the lease, or gives it up because the consumer
    /// stops on a failure: the stop token for retries of work whose only purpose is a
    /// checkpoint. (A graceful shutdown does not cancel it: the flush then tries until
    /// the service's deadline.)
    pub fn lease_lost_token(&self) -> &CancellationToken {
        &self.holding.stop
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
    pub fn current(&self) -> Checkpoint {
        self.holding.checkpoint()
    }

    /// Records that every record up to and including `position` is durable.
    pub async fn checkpoint(&self, position: &RecordPosition) -> Result<(), CheckpointerError> {
        if self.delivered.as_ref().is_none_or(|delivered| position > delivered) {
            return Err(CheckpointerError::AheadOfDelivered {
                position: position.clone(),
                delivered: self.delivered.clone(),
            });
        }
        // Already covered: an earlier write of ours landed though its answer was lost,
        // and the processor, retrying the same records, asks again for less.
        if self.holding.checkpoint().covers(position) {
            return Ok(());
        }
        self.write(|current| current.advanced_to(position.clone())).await
    }

    /// Checkpoints the last delivered record (everything handed over is durable).
    pub async fn checkpoint_delivered(&self) -> Result<(), CheckpointerError> {
        match self.delivered.clone() {
            Some(position) => self.checkpoint(&position).await,
            None => Ok(()),
        }
    }

    pub(crate) async fn checkpoint_shard_end(&self) -> Result<(), CheckpointerError> {
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
        &self,
        next: impl Fn(&Checkpoint) -> Result<Checkpoint, CheckpointError>,
    ) -> Result<(), CheckpointerError> {
        let _one_at_a_time = self.writing.lock().await;
        if self.holding.is_lost() {
            return Err(CheckpointerError::LeaseLost(self.shard_id.clone()));
        }
        let checkpoint = next(&self.holding.checkpoint())?;
        if checkpoint == self.holding.checkpoint() {
            return Ok(());
        }
        let written = retry(&RetryPolicy::CHECKPOINT, &self.holding.stop, || {
            self.attempt(&checkpoint)
        })
        .await;
        match written {
            Ok(()) => Ok(()),
            Err(RetryError::Failed {
                error: Attempt::Lost, ..
            }) => {
                self.holding.lose();
                Err(CheckpointerError::LeaseLost(self.shard_id.clone()))
            }
            Err(RetryError::Stopped { .. }) => Err(CheckpointerError::LeaseLost(self.shard_id.clone())),
            Err(RetryError::Failed {
                error: Attempt::Table(error),
                ..
            }) => Err(error.into()),
            Err(RetryError::Failed {
                error: Attempt::CounterMoved,
                ..
            }) => Err(CheckpointerError::Contended(self.shard_id.clone())),
        }
    }

    /// One checkpoint write. A failed condition, or an error that may hide a write that
    /// landed, is settled by reading the lease again: ours with this checkpoint means the
    /// write landed; ours with another means our renewal moved the counter (try again);
    /// anyone else's means the lease is lost.
    async fn attempt(&self, checkpoint: &Checkpoint) -> Result<(), Attempt> {
        let counter = self.holding.counter();
        let error = match self
            .store
            .checkpoint(&self.shard_id, &self.owner, counter, checkpoint)
            .await
        {
            Ok(counter) => {
                self.holding.checkpointed(counter, checkpoint.clone());
                return Ok(());
            }
            Err(error) if error.is_condition_failed() || error.is_retryable() => error,
            Err(error) => return Err(error.into()),
        };
        let lease = match self.store.get(&self.shard_id).await {
            Ok(lease) => lease,
            // The write's own error decides how to go on.
            Err(_) => return Err(error.into()),
        };
        if self.holding.stop.is_cancelled() {
            return Err(Attempt::Lost);
        }
        match decide_after_condition(lease.as_ref(), &self.owner) {
            // Still ours: what the lease holds we wrote, maybe by an earlier attempt whose
            // answer was lost. Never write behind it; done if it covers this checkpoint.
            AfterCondition::Held {
                counter,
                checkpoint: stored,
            } => {
                let done = match checkpoint {
                    Checkpoint::At(position) => stored.covers(position),
                    other => stored == *other,
                };
                self.holding.checkpointed(counter, stored);
                if done { Ok(()) } else { Err(Attempt::CounterMoved) }
            }
            AfterCondition::Lost => Err(Attempt::Lost),
        }
    }
}
