//! A processor that gathers records and writes them in parts: the half every connector
//! shares. The service supplies a [`Buffer`] (pure: what is gathered, when it is due,
//! what a flush takes) and an [`Output`] (the writes); [`BufferedProcessor`] owns the
//! rest:
//!
//! - records at or before the last one gathered are skipped (a failed call is retried
//!   with the same records);
//! - the buffer is flushed when it is due (after new records, or on a quiet shard),
//!   at the shard's end (again until nothing waits) and at shutdown;
//! - the checkpoint is written only after the output made a part durable, never past
//!   it, with [`RetryPolicy::SHARD_OUTPUT`] until it lands or the lease is lost;
//! - a part the output could not write is written first at the next flush; a lost
//!   lease drops everything (the next owner reads again from the checkpoint);
//! - an optional [`MemoryBudget`] shared by every shard bounds what is buffered: when
//!   it is spent, a shard flushes its own buffer, then waits for others to flush theirs.
//!
//! s3-connector (a batch of files per flush) and redshift-connector (a warehouse load
//! per flush, with files held back and retried) are built on it; a [`BufferedFactory`]
//! is the processor factory to hand [`crate::service::run_consumer`].

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use pipeline_runtime::metrics::names;
use pipeline_runtime::retry::{RetryError, RetryPolicy, retry};
use pipeline_runtime::{Metrics, ServiceContext};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{AwsError, Classified, ErrorKind};
use crate::position::RecordPosition;
use crate::processor::{Batch, Checkpointer, CheckpointerError, ProcessorError, ProcessorFactory, RecordProcessor};
use crate::source::StreamRecord;

/// What one shard has gathered and not yet written. Pure: no I/O, the clock is passed in.
pub trait Buffer<R>: Send + 'static {
    /// What a flush takes out to be written.
    type Taken: Send + Sync + 'static;
    /// What adding records tells the output (`()` when there is nothing to tell).
    type Added: Send + 'static;

    /// Gathers records, in stream order, each after every record gathered before.
    fn add(&mut self, records: &[R], now: Instant) -> Self::Added;

    /// Whether a flush is due (a limit is reached, or something waits for a retry).
    fn is_due(&self, now: Instant) -> bool;

    /// Takes what a flush writes; `None` when there is nothing to write.
    fn take(&mut self, now: Instant) -> Option<Self::Taken>;

    /// The output made `taken` durable (as far as it could: it may have put some of it
    /// aside in `taken`, to keep here). Returns where the shard may be checkpointed now,
    /// if anywhere.
    fn written(&mut self, taken: &mut Self::Taken) -> Option<RecordPosition>;

    /// When something left after a flush is tried again; `None` when nothing is left.
    /// A shard ends only once nothing is left.
    fn waiting_until(&self) -> Option<Instant> {
        None
    }

    /// The lease is lost: drop everything.
    fn clear(&mut self);
}

/// Where a [`BufferedProcessor`] writes what its buffer gathered: shared by every shard.
pub trait Output<Taken, Added = ()>: Send + Sync + 'static {
    /// Records were gathered: what must happen at once, before a checkpoint can pass them.
    fn added(&self, _added: Added, _flushing: &Flushing<'_>) -> impl Future<Output = Result<(), FlushError>> + Send {
        async { Ok(()) }
    }

    /// Makes `taken` durable. An error leaves `taken` as it is, to be written again by
    /// the next flush (so it must be safe to write twice).
    fn write(&self, taken: &mut Taken, flushing: &Flushing<'_>) -> impl Future<Output = Result<(), FlushError>> + Send;

    /// `taken` is durable and the checkpoint after it, if any was due, written.
    fn flushed(&self, _taken: Taken) {}
}

/// Why a flush stopped before its checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum FlushError {
    #[error("the shard's lease was lost; the new owner re-reads from the last checkpoint")]
    LeaseLost,
    #[error("shutting down before the buffered records were durable; nothing was checkpointed past them")]
    ShuttingDown,
    /// A write that retrying cannot fix: the service stops with it.
    #[error("{operation} failed for good: {}", .error.explain())]
    Failed { operation: &'static str, error: AwsError },
    #[error("checkpoint failed for good: {0}")]
    Checkpoint(CheckpointerError),
    /// The output cannot go on, whatever the input: the service stops with it.
    #[error("{0}")]
    Fatal(Box<dyn std::error::Error + Send + Sync>),
}

impl FlushError {
    pub fn fatal(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        FlushError::Fatal(error.into())
    }
}

impl Classified for FlushError {
    fn kind(&self) -> ErrorKind {
        match self {
            FlushError::LeaseLost | FlushError::ShuttingDown => ErrorKind::Transient,
            // Our own requests, not inputs: a permanent failure cannot be skipped either.
            FlushError::Failed { error, .. } => error.kind.of_own_request(),
            FlushError::Checkpoint(error) => error.kind().of_own_request(),
            FlushError::Fatal(_) => ErrorKind::Fatal,
        }
    }
}

/// What an [`Output`] is handed while it writes one shard's part: its retries and
/// pauses end when the lease is lost (pauses at shutdown too).
pub struct Flushing<'a> {
    shard_id: &'a str,
    lease_lost: &'a CancellationToken,
    shutdown: &'a CancellationToken,
}

impl Flushing<'_> {
    pub fn shard_id(&self) -> &str {
        self.shard_id
    }

    /// Runs `call` under [`RetryPolicy::SHARD_OUTPUT`] until it succeeds, fails for good
    /// (logged with `operation`) or the lease is lost. Every retry
    /// is the same request, so a write that succeeded unseen is repeated harmlessly.
    /// Shutdown does not interrupt it: the service's deadline bounds how long a
    /// stopping process keeps trying to make its records durable.
    pub async fn retry<T, F, Fut>(&self, operation: &'static str, call: F) -> Result<T, FlushError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, AwsError>>,
    {
        match retry(&RetryPolicy::SHARD_OUTPUT, self.lease_lost, call).await {
            Ok(value) => Ok(value),
            Err(RetryError::Stopped { .. }) => Err(FlushError::LeaseLost),
            Err(RetryError::Failed { error, attempts }) => {
                tracing::error!(shard_id = %self.shard_id, operation, attempts, %error, "write failed for good");
                Err(FlushError::Failed { operation, error })
            }
        }
    }

    /// Waits `delay`, unless the service stops or the lease is lost first.
    pub async fn pause(&self, delay: Duration) -> Result<(), FlushError> {
        self.pause_until(Instant::now() + delay).await
    }

    /// Waits until `at`, unless the service stops or the lease is lost first.
    pub async fn pause_until(&self, at: Instant) -> Result<(), FlushError> {
        tokio::select! {
            () = tokio::time::sleep_until(at) => Ok(()),
            () = self.shutdown.cancelled() => Err(FlushError::ShuttingDown),
            () = self.lease_lost.cancelled() => Err(FlushError::LeaseLost),
        }
    }
}

/// Bytes of buffered records across every shard of a process.
#[derive(Debug, Clone)]
pub struct MemoryBudget {
    bytes: Arc<Semaphore>,
    cap: usize,
}

impl MemoryBudget {
    pub fn new(cap: usize) -> Self {
        // A semaphore holds at most `Semaphore::MAX_PERMITS`.
        let cap = cap.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            bytes: Arc::new(Semaphore::new(cap)),
            cap,
        }
    }

    fn permits(&self, bytes: usize) -> u32 {
        u32::try_from(bytes.clamp(1, self.cap)).unwrap_or(u32::MAX)
    }
}

/// Makes one [`BufferedProcessor`] per shard: a fresh buffer from `new_buffer`, the
/// output shared.
pub struct BufferedFactory<O, N> {
    output: Arc<O>,
    new_buffer: N,
    memory: Option<MemoryBudget>,
    metrics: Metrics,
    shutdown: CancellationToken,
}

impl<O, N> BufferedFactory<O, N> {
    /// Processors that write through `output` and stop their pauses when `shutdown` is
    /// cancelled.
    pub fn new(output: O, new_buffer: N, metrics: Metrics, shutdown: CancellationToken) -> Self {
        Self {
            output: Arc::new(output),
            new_buffer,
            memory: None,
            metrics,
            shutdown,
        }
    }

    /// The same, with the service's metrics and shutdown.
    pub fn for_service(context: &ServiceContext, output: O, new_buffer: N) -> Self {
        Self::new(output, new_buffer, context.metrics.clone(), context.shutdown.clone())
    }

    /// Bounds the bytes buffered across every shard.
    pub fn with_memory(mut self, memory: MemoryBudget) -> Self {
        self.memory = Some(memory);
        self
    }
}

impl<R, B, O, N> ProcessorFactory<R> for BufferedFactory<O, N>
where
    R: StreamRecord + Send + Sync + 'static,
    B: Buffer<R>,
    O: Output<B::Taken, B::Added>,
    N: Fn(&str) -> B + Send + Sync + 'static,
{
    type Processor = BufferedProcessor<B, O, R>;

    fn create(&self, shard_id: &str) -> BufferedProcessor<B, O, R> {
        BufferedProcessor {
            buffer: (self.new_buffer)(shard_id),
            output: self.output.clone(),
            memory: self.memory.clone(),
            metrics: self.metrics.clone(),
            shutdown: self.shutdown.clone(),
            gathered_through: None,
            unwritten: None,
            unchecked: None,
            permits: None,
            records: PhantomData,
        }
    }
}

/// One shard's processor: a buffer, and an output shared with every shard.
pub struct BufferedProcessor<B: Buffer<R>, O, R> {
    buffer: B,
    output: Arc<O>,
    memory: Option<MemoryBudget>,
    metrics: Metrics,
    shutdown: CancellationToken,
    /// The last record gathered: records up to it are not gathered again.
    gathered_through: Option<RecordPosition>,
    /// A part taken whose write failed: written first at the next flush.
    unwritten: Option<B::Taken>,
    /// Durable but not checkpointed yet (the checkpoint write failed).
    unchecked: Option<RecordPosition>,
    /// This shard's share of the memory budget, held until its records are durable.
    permits: Option<OwnedSemaphorePermit>,
    records: PhantomData<fn(&R)>,
}

impl<R, B, O> BufferedProcessor<B, O, R>
where
    R: StreamRecord + Send + Sync + 'static,
    B: Buffer<R>,
    O: Output<B::Taken, B::Added>,
{
    fn flushing<'a>(&'a self, checkpointer: &'a Checkpointer) -> Flushing<'a> {
        Flushing {
            shard_id: checkpointer.shard_id(),
            lease_lost: checkpointer.lease_lost_token(),
            shutdown: &self.shutdown,
        }
    }

    /// The records of `records` after the last one gathered.
    fn unseen<'r>(&self, records: &'r [R]) -> &'r [R] {
        let seen = records.partition_point(|r| self.gathered_through.as_ref().is_some_and(|last| r.position() <= last));
        &records[seen..]
    }

    /// Takes `bytes` of the memory budget, flushing this shard's buffer first when the
    /// budget is spent, then waiting for other shards to flush theirs (until shutdown or
    /// the lease is lost).
    async fn reserve(&mut self, bytes: usize, checkpointer: &Checkpointer) -> Result<(), FlushError> {
        let Some(memory) = self.memory.clone() else {
            return Ok(());
        };
        let wanted = memory.permits(bytes);
        let permit = match memory.bytes.clone().try_acquire_many_owned(wanted) {
            Ok(permit) => permit,
            Err(_) => {
                self.metrics.count(names::BACK_PRESSURE_WAITS, 1, &[]);
                self.flush(checkpointer).await?;
                tokio::select! {
                    permit = memory.bytes.clone().acquire_many_owned(wanted) => permit.map_err(FlushError::fatal)?,
                    () = self.shutdown.cancelled() => return Err(FlushError::ShuttingDown),
                    () = checkpointer.lease_lost_token().cancelled() => return Err(FlushError::LeaseLost),
                }
            }
        };
        match &mut self.permits {
            Some(held) => held.merge(permit),
            None => self.permits = Some(permit),
        }
        Ok(())
    }

    /// Writes what the buffer holds (a part left unwritten by a failed flush first),
    /// then checkpoints after it.
    async fn flush(&mut self, checkpointer: &Checkpointer) -> Result<(), FlushError> {
        // The memory stays reserved until the records are durable: a part whose write
        // failed is still held (in `unwritten`), so its share is kept too.
        let permits = self.permits.take();
        let result = self.write_all(checkpointer).await;
        if result.is_err() {
            self.permits = permits;
        }
        result
    }

    async fn write_all(&mut self, checkpointer: &Checkpointer) -> Result<(), FlushError> {
        if let Some(taken) = self.unwritten.take() {
            self.write(taken, checkpointer).await?;
        }
        match self.buffer.take(Instant::now()) {
            Some(taken) => self.write(taken, checkpointer).await,
            None => self.checkpoint(checkpointer).await,
        }
    }

    async fn write(&mut self, mut taken: B::Taken, checkpointer: &Checkpointer) -> Result<(), FlushError> {
        if let Err(error) = self.output.write(&mut taken, &self.flushing(checkpointer)).await {
            self.unwritten = Some(taken);
            return Err(error);
        }
        if let Some(position) = self.buffer.written(&mut taken) {
            self.unchecked = Some(position);
        }
        self.checkpoint(checkpointer).await?;
        self.output.flushed(taken);
        Ok(())
    }

    /// Checkpoints what is durable and not checkpointed yet.
    async fn checkpoint(&mut self, checkpointer: &Checkpointer) -> Result<(), FlushError> {
        let Some(position) = self.unchecked.clone() else {
            return Ok(());
        };
        let checkpointed = retry(&RetryPolicy::SHARD_OUTPUT, checkpointer.lease_lost_token(), || {
            checkpointer.checkpoint(&position)
        })
        .await;
        match checkpointed {
            Ok(()) => {
                self.unchecked = None;
                Ok(())
            }
            Err(
                RetryError::Stopped { .. }
                | RetryError::Failed {
                    error: CheckpointerError::LeaseLost(_),
                    ..
                },
            ) => Err(FlushError::LeaseLost),
            Err(RetryError::Failed { error, .. }) => Err(FlushError::Checkpoint(error)),
        }
    }

    async fn flush_if_due(&mut self, checkpointer: &Checkpointer) -> Result<(), FlushError> {
        if self.unwritten.is_some() || self.buffer.is_due(Instant::now()) {
            self.flush(checkpointer).await?;
        }
        Ok(())
    }
}

impl<R, B, O> RecordProcessor<R> for BufferedProcessor<B, O, R>
where
    R: StreamRecord + Send + Sync + 'static,
    B: Buffer<R>,
    O: Output<B::Taken, B::Added>,
{
    async fn process(&mut self, batch: &Batch<R>, checkpointer: &mut Checkpointer) -> Result<(), ProcessorError> {
        // A call retried after a failed flush has nothing new to gather: the part that
        // failed is written again now, paced by the consumer's backoff.
        if self.unwritten.is_some() {
            self.flush(checkpointer).await?;
        }
        let records = self.unseen(&batch.records);
        if records.is_empty() {
            return Ok(());
        }
        let bytes = records.iter().map(StreamRecord::size_bytes).sum();
        self.reserve(bytes, checkpointer).await?;
        let records = self.unseen(&batch.records);
        let Some(last) = records.last() else {
            return Ok(());
        };
        let last = last.position().clone();
        let now = Instant::now();
        let added = self.buffer.add(records, now);
        self.gathered_through = Some(last);
        if let Err(error) = self.output.added(added, &self.flushing(checkpointer)).await {
            // The records are gathered, so a retried call would skip them and what had to
            // happen before a checkpoint may pass them never would: only a restart, which
            // reads them again from the checkpoint, is safe.
            return Err(match error {
                FlushError::LeaseLost => error,
                other => FlushError::fatal(other),
            }
            .into());
        }
        if self.buffer.is_due(now) {
            self.flush(checkpointer).await?;
        }
        Ok(())
    }

    async fn idle(&mut self, checkpointer: &mut Checkpointer) -> Result<(), ProcessorError> {
        Ok(self.flush_if_due(checkpointer).await?)
    }

    /// Flushes until nothing is left (what waits for a retry is tried again in its time).
    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) -> Result<(), ProcessorError> {
        loop {
            self.flush(checkpointer).await?;
            let Some(next) = self.buffer.waiting_until() else {
                return Ok(());
            };
            self.flushing(checkpointer).pause_until(next).await?;
        }
    }

    async fn lease_lost(&mut self) {
        self.buffer.clear();
        self.gathered_through = None;
        self.unwritten = None;
        self.unchecked = None;
        self.permits = None;
    }

    /// One flush: what does not fit in the deadline the next owner repeats.
    async fn shutdown_requested(&mut self, checkpointer: &mut Checkpointer) -> Result<(), ProcessorError> {
        Ok(self.flush(checkpointer).await?)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};

    use futures::future::BoxFuture;

    use super::*;
    use crate::holding::{Holding, Liveness};
    use crate::lease::Lease;
    use crate::lease_store::LeaseStore;
    use crate::lease_table::LeaseTableError;
    use crate::membership::WorkerEntry;
    use crate::position::{Checkpoint, SequenceNumber};

    #[derive(Debug, Clone, PartialEq)]
    struct Record(RecordPosition);

    impl StreamRecord for Record {
        fn position(&self) -> &RecordPosition {
            &self.0
        }
        fn size_bytes(&self) -> usize {
            1
        }
    }

    fn records(sequences: std::ops::RangeInclusive<u32>) -> Batch<Record> {
        Batch {
            shard_id: "s".into(),
            records: sequences
                .map(|n| {
                    Record(RecordPosition {
                        sequence: SequenceNumber::parse(&n.to_string()).expect("digits"),
                        subsequence: 0,
                    })
                })
                .collect(),
            millis_behind_latest: None,
        }
    }

    fn sequence(position: &RecordPosition) -> u32 {
        position.sequence.to_string().parse().expect("digits")
    }

    /// What happened, in order: parts written and checkpoints landed, by last sequence.
    #[derive(Debug, Clone, PartialEq)]
    enum Event {
        Wrote(Vec<u32>),
        Checkpointed(u32),
    }

    type Log = Arc<Mutex<Vec<Event>>>;

    /// Due at `due` records. With `hold_first`, the first part written is held back
    /// and taken again 5 s later (as a load holds a file the warehouse refused).
    struct Pile {
        records: Vec<Record>,
        due: usize,
        hold_first: bool,
        held: Option<(Vec<Record>, Instant)>,
    }

    impl Buffer<Record> for Pile {
        type Taken = Vec<Record>;
        type Added = ();

        fn add(&mut self, records: &[Record], _now: Instant) {
            self.records.extend_from_slice(records);
        }
        fn is_due(&self, _now: Instant) -> bool {
            self.records.len() >= self.due
        }
        fn take(&mut self, now: Instant) -> Option<Vec<Record>> {
            if let Some((held, _)) = self.held.take_if(|(_, at)| *at <= now) {
                return Some(held);
            }
            (!self.records.is_empty()).then(|| std::mem::take(&mut self.records))
        }
        fn written(&mut self, taken: &mut Vec<Record>) -> Option<RecordPosition> {
            if std::mem::take(&mut self.hold_first) {
                self.held = Some((std::mem::take(taken), Instant::now() + Duration::from_secs(5)));
                return None;
            }
            taken.last().map(|r| r.0.clone())
        }
        fn waiting_until(&self) -> Option<Instant> {
            self.held.as_ref().map(|(_, at)| *at)
        }
        fn clear(&mut self) {
            self.records.clear();
            self.held = None;
        }
    }

    /// Writes into the log; the first `failures` writes fail with a passing error, and
    /// with `added_fails` what must follow an add fails with one too.
    struct Memory {
        log: Log,
        failures: AtomicU32,
        added_fails: bool,
    }

    impl Output<Vec<Record>> for Memory {
        async fn added(&self, _added: (), _flushing: &Flushing<'_>) -> Result<(), FlushError> {
            if self.added_fails {
                let error = AwsError::new("test:Added", ErrorKind::Transient, "try again");
                return Err(FlushError::Failed {
                    operation: "test added",
                    error,
                });
            }
            Ok(())
        }

        async fn write(&self, taken: &mut Vec<Record>, flushing: &Flushing<'_>) -> Result<(), FlushError> {
            flushing
                .retry("memory write", || async {
                    if self
                        .failures
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok()
                    {
                        return Err(AwsError::new("test:Write", ErrorKind::Transient, "try again"));
                    }
                    let written = taken.iter().map(|r| sequence(&r.0)).collect();
                    self.log.lock().expect("log").push(Event::Wrote(written));
                    Ok(())
                })
                .await
        }
    }

    /// A lease table holding one lease, ours; checkpoints go to the log.
    struct Leases {
        log: Log,
    }

    impl LeaseStore for Leases {
        fn name(&self) -> &str {
            "test"
        }
        fn ensure_exists(&self, _create: bool) -> BoxFuture<'_, Result<(), LeaseTableError>> {
            Box::pin(async { Ok(()) })
        }
        fn list(&self) -> BoxFuture<'_, Result<Vec<Lease>, LeaseTableError>> {
            Box::pin(async { Ok(Vec::new()) })
        }
        fn get<'a>(&'a self, _key: &'a str) -> BoxFuture<'a, Result<Option<Lease>, LeaseTableError>> {
            Box::pin(async { Ok(None) })
        }
        fn create<'a>(&'a self, _lease: &'a Lease) -> BoxFuture<'a, Result<bool, LeaseTableError>> {
            Box::pin(async { Ok(false) })
        }
        fn take<'a>(&'a self, _lease: &'a Lease, _owner: &'a str) -> BoxFuture<'a, Result<u64, LeaseTableError>> {
            Box::pin(async { Ok(1) })
        }
        fn checkpoint<'a>(
            &'a self,
            _key: &'a str,
            _owner: &'a str,
            counter: u64,
            checkpoint: &'a Checkpoint,
        ) -> BoxFuture<'a, Result<u64, LeaseTableError>> {
            Box::pin(async move {
                if let Checkpoint::At(position) = checkpoint {
                    self.log
                        .lock()
                        .expect("log")
                        .push(Event::Checkpointed(sequence(position)));
                }
                Ok(counter + 1)
            })
        }
        fn hand_off<'a>(
            &'a self,
            _key: &'a str,
            _owner: &'a str,
            counter: u64,
            _to: &'a str,
        ) -> BoxFuture<'a, Result<u64, LeaseTableError>> {
            Box::pin(async move { Ok(counter + 1) })
        }
        fn release<'a>(
            &'a self,
            _key: &'a str,
            _owner: &'a str,
            _counter: u64,
        ) -> BoxFuture<'a, Result<(), LeaseTableError>> {
            Box::pin(async { Ok(()) })
        }
        fn delete_finished<'a>(&'a self, _key: &'a str) -> BoxFuture<'a, Result<(), LeaseTableError>> {
            Box::pin(async { Ok(()) })
        }
        fn workers(&self) -> BoxFuture<'_, Result<Vec<WorkerEntry>, LeaseTableError>> {
            Box::pin(async { Ok(Vec::new()) })
        }
        fn heartbeat<'a>(&'a self, _entry: &'a WorkerEntry) -> BoxFuture<'a, Result<(), LeaseTableError>> {
            Box::pin(async { Ok(()) })
        }
        fn remove_worker<'a>(
            &'a self,
            _worker_id: &'a str,
            _heartbeat: Option<u64>,
        ) -> BoxFuture<'a, Result<(), LeaseTableError>> {
            Box::pin(async { Ok(()) })
        }
    }

    struct Shard {
        processor: BufferedProcessor<Pile, Memory, Record>,
        checkpointer: Checkpointer,
        holding: Arc<Holding>,
        log: Log,
        shutdown: CancellationToken,
    }

    fn shard(due: usize, failures: u32) -> Shard {
        shard_with(due, failures, false)
    }

    fn shard_with(due: usize, failures: u32, added_fails: bool) -> Shard {
        let log = Log::default();
        let shutdown = CancellationToken::new();
        let output = Memory {
            log: log.clone(),
            failures: AtomicU32::new(failures),
            added_fails,
        };
        // The memory budget's metric is catalogued for the s3-connector, its user.
        let metrics = Metrics::with_sink("Test", "s3-connector", Box::new(std::io::sink()));
        let factory = BufferedFactory::new(
            output,
            move |_: &str| Pile {
                records: Vec::new(),
                due,
                hold_first: false,
                held: None,
            },
            metrics,
            shutdown.clone(),
        );
        let liveness = Arc::new(Liveness::new(Duration::from_secs(10)));
        let holding = Holding::new("s", 1, Checkpoint::TrimHorizon, liveness.clone(), liveness.era());
        let store = Arc::new(Leases { log: log.clone() });
        Shard {
            processor: ProcessorFactory::<Record>::create(&factory, "s"),
            checkpointer: Checkpointer::new(store, "s", "me", holding.clone()),
            holding,
            log,
            shutdown,
        }
    }

    impl Shard {
        async fn deliver(&mut self, batch: &Batch<Record>) -> Result<(), ProcessorError> {
            if let Some(last) = batch.records.last() {
                self.checkpointer.delivered(last.0.clone());
            }
            self.processor.process(batch, &mut self.checkpointer).await
        }

        fn log(&self) -> Vec<Event> {
            self.log.lock().expect("log").clone()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_of_what_must_follow_an_add_stops_the_consumer_before_any_checkpoint() {
        let mut shard = shard_with(1, 0, true);
        let error = shard
            .deliver(&records(1..=2))
            .await
            .expect_err("the add's follow-up failed");
        assert!(
            error.stops_the_consumer(),
            "a retry would skip the gathered records: {error}"
        );
        assert_eq!(shard.log(), [], "nothing written, nothing checkpointed");
    }

    #[tokio::test(start_paused = true)]
    async fn the_checkpoint_follows_each_write_and_never_passes_it() {
        let mut shard = shard(3, 0);
        shard.deliver(&records(1..=2)).await.expect("buffered");
        assert_eq!(shard.log(), [], "not due: nothing written, nothing checkpointed");
        shard.deliver(&records(3..=4)).await.expect("flushed");
        shard.deliver(&records(5..=5)).await.expect("buffered");
        assert_eq!(
            shard.log(),
            [Event::Wrote(vec![1, 2, 3, 4]), Event::Checkpointed(4)],
            "record 5 is delivered but only buffered: the checkpoint stays at 4"
        );
        shard.processor.idle(&mut shard.checkpointer).await.expect("idle");
        assert_eq!(shard.log().len(), 2, "a quiet shard flushes only what is due");
    }

    #[tokio::test(start_paused = true)]
    async fn records_handed_again_are_gathered_once() {
        let mut shard = shard(10, 0);
        shard.deliver(&records(1..=3)).await.expect("buffered");
        shard.deliver(&records(2..=4)).await.expect("buffered");
        shard
            .processor
            .shard_ended(&mut shard.checkpointer)
            .await
            .expect("ended");
        assert_eq!(shard.log(), [Event::Wrote(vec![1, 2, 3, 4]), Event::Checkpointed(4)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_output_is_retried_and_nothing_is_checkpointed_before_it_succeeds() {
        let mut shard = shard(2, 3);
        shard
            .deliver(&records(1..=2))
            .await
            .expect("written after three failures");
        assert_eq!(shard.log(), [Event::Wrote(vec![1, 2]), Event::Checkpointed(2)]);

        // An output that keeps failing: retried until the lease is lost, never checkpointed.
        let mut shard = self::shard(2, u32::MAX);
        let lose = {
            let holding = shard.holding.clone();
            async move {
                tokio::time::sleep(Duration::from_secs(30)).await;
                holding.lose();
            }
        };
        let batch = records(1..=2);
        let (result, ()) = tokio::join!(shard.deliver(&batch), lose);
        let error = result.expect_err("the lease was lost");
        assert!(!error.stops_the_consumer(), "{error}");
        assert_eq!(shard.log(), [], "nothing written, nothing checkpointed");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_lease_drops_the_buffer_without_checkpointing() {
        let mut shard = shard(10, 0);
        shard.deliver(&records(1..=3)).await.expect("buffered");
        shard.holding.lose();
        shard.processor.lease_lost().await;
        shard
            .processor
            .shutdown_requested(&mut shard.checkpointer)
            .await
            .expect("nothing to flush");
        assert_eq!(shard.log(), [], "the next owner reads again from the checkpoint");
        // A new holder of the same shard gathers the records again from the start.
        shard.deliver(&records(1..=1)).await.expect("gathered again");
        assert_eq!(shard.processor.buffer.records.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_flushes_then_checkpoints() {
        let mut shard = shard(10, 0);
        shard.deliver(&records(1..=3)).await.expect("buffered");
        shard.shutdown.cancel();
        shard
            .processor
            .shutdown_requested(&mut shard.checkpointer)
            .await
            .expect("flushed");
        assert_eq!(shard.log(), [Event::Wrote(vec![1, 2, 3]), Event::Checkpointed(3)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_spent_memory_budget_flushes_the_shard_and_waits_until_shutdown() {
        let shutdown = CancellationToken::new();
        let mut shard = shard(10, 0);
        shard.processor.memory = Some(MemoryBudget::new(3));
        shard.processor.shutdown = shutdown.clone();
        shard.deliver(&records(1..=3)).await.expect("within the budget");
        let held_elsewhere = shard
            .processor
            .memory
            .clone()
            .expect("budget")
            .bytes
            .try_acquire_many_owned(3);
        assert!(held_elsewhere.is_err(), "this shard holds the whole budget");
        // The next record does not fit: the shard's own records are flushed (freeing the
        // budget) and the new one is taken.
        shard.deliver(&records(4..=4)).await.expect("flushed to make room");
        assert_eq!(shard.log(), [Event::Wrote(vec![1, 2, 3]), Event::Checkpointed(3)]);
        // Another shard takes what is left; this one waits, until the service stops.
        let other = shard
            .processor
            .memory
            .clone()
            .expect("budget")
            .bytes
            .try_acquire_many_owned(2)
            .expect("two left");
        let stop = async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            shutdown.cancel();
        };
        let batch = records(5..=7);
        let (result, ()) = tokio::join!(shard.deliver(&batch), stop);
        assert!(result.is_err(), "a wait for memory ends at shutdown");
        drop(other);
    }

    #[tokio::test(start_paused = true)]
    async fn a_shard_ends_only_once_nothing_is_held_back() {
        let mut shard = shard(10, 0);
        shard.processor.buffer.hold_first = true;
        shard.deliver(&records(1..=2)).await.expect("buffered");
        let started = Instant::now();
        shard
            .processor
            .shard_ended(&mut shard.checkpointer)
            .await
            .expect("ended");
        assert_eq!(
            shard.log(),
            [
                Event::Wrote(vec![1, 2]),
                Event::Wrote(vec![1, 2]),
                Event::Checkpointed(2)
            ],
            "held back once, written again in its time, then checkpointed"
        );
        assert_eq!(started.elapsed(), Duration::from_secs(5));

        // A stop while something is held back ends the wait without a checkpoint.
        let mut shard = self::shard(10, 0);
        shard.processor.buffer.hold_first = true;
        shard.deliver(&records(1..=2)).await.expect("buffered");
        shard.shutdown.cancel();
        let error = shard
            .processor
            .shard_ended(&mut shard.checkpointer)
            .await
            .expect_err("stopped while waiting");
        assert!(!error.stops_the_consumer(), "{error}");
        assert_eq!(shard.log(), [Event::Wrote(vec![1, 2])]);
    }
}
