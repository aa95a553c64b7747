//! Reads one shard for as long as this worker holds its lease: once its parents ended
//! (a child waits for them first), a small state machine ([`State`], one step per state).
//!
//! ```text
//! (parents ended) ──► Starting ──► GettingIterator ◄────────────────┐
//!                                        │ (trimmed: from the oldest) │ expired
//!                                        ▼                            │ iterator
//!                                     Reading ──► processor ──────────┘
//!                                        │ no next iterator, or the shard is gone
//!                                        ▼
//!                                     Finishing ──► SHARD_END
//! ```
//!
//! Before every step the task checks that its lease is still its own: not lost, not
//! given up, not being handed to a worker that asked for it, and this worker's last
//! heartbeat that landed sent less than a failover time ago by its own clock (a worker
//! stalled past the failover time must not read on while a new owner does).

use std::sync::Arc;
use std::time::Duration;

use pipeline_runtime::metrics::names::{
    self,
    dimension::{APPLICATION, SHARD},
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::InitialPosition;
use crate::error::{AwsError, Classified, ErrorKind, ReadError};
use crate::holding::Holding;
use crate::position::{Checkpoint, RecordPosition};
use crate::processor::{Batch, Checkpointer, ProcessorError, ProcessorFactory, RecordProcessor};
use crate::source::{ReadResult, Source, StartPosition, StreamRecord};
use crate::worker::Context;

/// How a shard task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardOutcome {
    /// Read to its end (or gone from the stream); SHARD_END is checkpointed.
    Ended,
    /// The lease went to another worker.
    Lost,
    /// The lease was not renewed for a failover time by this worker's clock: others may
    /// already read the shard.
    Expired,
    /// The worker is stopping.
    Stopped,
    /// Another worker asked for the lease: flushed and checkpointed, it is handed over.
    HandedOff,
    /// A failure this process cannot get past (the task's error says which): the
    /// consumer stops and the service exits with it.
    Failed,
    /// The task panicked: its lease is given up and the panic counted.
    Panicked,
}

/// Why a shard task stopped the consumer.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("reading shard {shard_id}: {error}")]
    Read { shard_id: String, error: ReadError },
    #[error("processing shard {shard_id}: {error}")]
    Processor { shard_id: String, error: ProcessorError },
}

pub(crate) struct ShardTask<S, F> {
    pub context: Context<S, F>,
    pub shard_id: String,
    pub parent_shard_ids: Vec<String>,
    pub holding: Arc<Holding>,
    pub shutdown: CancellationToken,
}

/// Where a shard's reading stands, once its parents ended. Each state but `Done` has a
/// step of its own that leads to the next ([`ShardTask::step`]); before each step the
/// task checks that the shard is still its to read.
enum State {
    /// The processor knows where the shard starts: find where to read from.
    Starting,
    /// Asking the source for an iterator at this position.
    GettingIterator(StartPosition),
    /// Reading with this iterator, and handing what it reads to the processor.
    Reading(String),
    /// Every record was delivered: the processor makes everything durable, then
    /// SHARD_END is checkpointed.
    Finishing,
    Done(ShardOutcome),
}

/// What one step of the reading carries along.
struct Reader<P> {
    processor: P,
    checkpointer: Checkpointer,
    /// The checkpoint the shard started at; records it covers are skipped.
    start: Checkpoint,
    last_read: Option<RecordPosition>,
    /// Records after this were trimmed before they could be read: said once the first
    /// record after the trim horizon is seen.
    trimmed_after: Option<String>,
    backoff: Backoff,
    failure: Option<ShardError>,
}

impl<S: Source, F: ProcessorFactory<S::Record>> ShardTask<S, F> {
    pub async fn run(self) -> (ShardOutcome, Option<ShardError>) {
        if let Some(outcome) = self.wait_for_parents().await {
            return (outcome, None);
        }
        let start = self.holding.checkpoint();
        if start.is_shard_end() {
            return (ShardOutcome::Ended, None);
        }
        let mut reader = self.start(start).await;
        let mut state = State::Starting;
        let outcome = loop {
            state = match (self.interrupted(), state) {
                (_, State::Done(outcome)) => break outcome,
                (Some(outcome), _) => State::Done(outcome),
                (None, state) => self.step(&mut reader, state).await,
            };
        };
        self.ended(&mut reader, outcome).await;
        (outcome, reader.failure)
    }

    /// The transition out of `state`.
    async fn step(&self, reader: &mut Reader<F::Processor>, state: State) -> State {
        match state {
            State::Starting => State::GettingIterator(self.start_position(&reader.start)),
            State::GettingIterator(start) => self.get_iterator(reader, start).await,
            State::Reading(iterator) => self.read(reader, iterator).await,
            State::Finishing => self.finish(reader).await,
            State::Done(outcome) => State::Done(outcome),
        }
    }

    /// Makes the shard's processor and tells it where the shard starts.
    async fn start(&self, start: Checkpoint) -> Reader<F::Processor> {
        let mut reader = Reader {
            processor: self.context.factory.create(&self.shard_id),
            checkpointer: Checkpointer::new(
                self.context.store.clone(),
                &self.shard_id,
                &self.context.config.worker_id,
                self.holding.clone(),
            ),
            start: start.clone(),
            last_read: None,
            trimmed_after: None,
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(10)),
            failure: None,
        };
        reader.processor.initialize(&self.shard_id, &start).await;
        tracing::info!(application = %self.context.config.application, shard_id = %self.shard_id, checkpoint = %start, "shard started");
        reader
    }

    /// Why the task must stop now, if it must.
    fn interrupted(&self) -> Option<ShardOutcome> {
        if self.holding.stop.is_cancelled() {
            Some(ShardOutcome::Lost)
        } else if self.shutdown.is_cancelled() {
            Some(ShardOutcome::Stopped)
        } else if self.holding.handing.is_cancelled() {
            Some(ShardOutcome::HandedOff)
        } else if !self.holding.is_current(Instant::now()) {
            Some(ShardOutcome::Expired)
        } else {
            None
        }
    }

    /// Waits `duration`, or less if the task must stop.
    async fn pause(&self, duration: Duration) -> Option<ShardOutcome> {
        tokio::select! {
            biased;
            () = self.holding.stop.cancelled() => Some(ShardOutcome::Lost),
            () = self.shutdown.cancelled() => Some(ShardOutcome::Stopped),
            () = self.holding.handing.cancelled() => Some(ShardOutcome::HandedOff),
            () = tokio::time::sleep(duration) => self.interrupted(),
        }
    }

    /// Waits `duration`, then goes on to `next`, unless the task must stop.
    async fn pause_then(&self, duration: Duration, next: State) -> State {
        match self.pause(duration).await {
            Some(outcome) => State::Done(outcome),
            None => next,
        }
    }

    /// A child shard starts only once every parent with a lease is at SHARD_END, so
    /// records of one partition key are never processed out of order across a reshard.
    /// Returns why the task must stop instead, if it must; meanwhile the shard counts
    /// as waiting, not toward this worker's load.
    async fn wait_for_parents(&self) -> Option<ShardOutcome> {
        self.holding.set_waiting(!self.parent_shard_ids.is_empty());
        let interrupted = loop {
            if let Some(outcome) = self.interrupted() {
                break Some(outcome);
            }
            let waiting = self.unfinished_parents().await;
            if waiting.is_empty() {
                break None;
            }
            tracing::debug!(shard_id = %self.shard_id, parents = ?waiting, "waiting for parent shards to end");
            let poll = self
                .context
                .config
                .idle_between_reads
                .max(self.context.config.taker_interval / 2);
            if let Some(outcome) = self.pause(poll).await {
                break Some(outcome);
            }
        };
        self.holding.set_waiting(false);
        interrupted
    }

    /// The parents whose lease is not at SHARD_END (or could not be read).
    async fn unfinished_parents(&self) -> Vec<String> {
        let mut waiting = Vec::new();
        for parent in &self.parent_shard_ids {
            match self.context.store.get(parent).await {
                Ok(Some(lease)) if !lease.checkpoint.is_shard_end() => waiting.push(parent.clone()),
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(shard_id = %self.shard_id, %error, "reading parent leases failed");
                    waiting.push(parent.clone());
                }
            }
        }
        waiting
    }

    fn start_position(&self, checkpoint: &Checkpoint) -> StartPosition {
        match checkpoint {
            Checkpoint::TrimHorizon | Checkpoint::ShardEnd => StartPosition::TrimHorizon,
            Checkpoint::Latest => StartPosition::Latest,
            Checkpoint::AtTimestamp => match self.context.config.initial_position {
                InitialPosition::AtTimestamp(ms) => StartPosition::AtTimestamp(ms),
                _ => StartPosition::TrimHorizon,
            },
            // AT, not AFTER: the checkpointed record may be an aggregate only partly
            // processed; records the checkpoint covers are skipped below.
            Checkpoint::At(position) => StartPosition::AtSequence(position.sequence.clone()),
        }
    }

    /// Where reading goes on after an iterator expired.
    fn resume_position(&self, reader: &Reader<F::Processor>) -> StartPosition {
        match &reader.last_read {
            Some(position) => StartPosition::AfterSequence(position.sequence.clone()),
            None => self.start_position(&reader.start),
        }
    }

    async fn get_iterator(&self, reader: &mut Reader<F::Processor>, start: StartPosition) -> State {
        match self.context.source.shard_iterator(&self.shard_id, &start).await {
            Ok(iterator) => {
                reader.backoff.reset();
                State::Reading(iterator)
            }
            Err(error) => {
                self.after_read_error(reader, error, State::GettingIterator(start))
                    .await
            }
        }
    }

    /// What a failed iterator request or read leads to; `again` repeats the failed step.
    async fn after_read_error(&self, reader: &mut Reader<F::Processor>, error: ReadError, again: State) -> State {
        match error {
            ReadError::IteratorExpired => {
                tracing::info!(shard_id = %self.shard_id, "shard iterator expired; getting a new one");
                State::GettingIterator(self.resume_position(reader))
            }
            ReadError::Trimmed(error) => self.restart_at_the_oldest(reader, &error),
            ReadError::ShardNotFound(error) => self.shard_not_found(reader, &error, again).await,
            ReadError::Aws(error) if error.kind.is_retryable() => {
                if error.kind == ErrorKind::Throttled {
                    self.context
                        .metrics
                        .count(names::THROTTLES, 1, &[(APPLICATION, &self.context.config.application)]);
                }
                tracing::debug!(shard_id = %self.shard_id, %error, "retrying");
                self.pause_then(reader.backoff.next_delay(), again).await
            }
            ReadError::Aws(error) => {
                // Our own request, failing for good: nothing to skip past, and retrying
                // would stall the shard unseen.
                tracing::error!(shard_id = %self.shard_id, %error, "cannot read the shard; stopping");
                reader.failure = Some(ShardError::Read {
                    shard_id: self.shard_id.clone(),
                    error: ReadError::Aws(error),
                });
                State::Done(ShardOutcome::Failed)
            }
        }
    }

    /// The records between where this shard stood and the trim horizon are gone from
    /// the stream: said loudly, and reading goes on from the oldest left.
    fn restart_at_the_oldest(&self, reader: &mut Reader<F::Processor>, error: &AwsError) -> State {
        let after = reader
            .last_read
            .as_ref()
            .map_or_else(|| reader.start.to_string(), ToString::to_string);
        self.context.metrics.count(
            names::TRIMMED_READS,
            1,
            &[(APPLICATION, &self.context.config.application)],
        );
        tracing::error!(application = %self.context.config.application, shard_id = %self.shard_id, %after, %error,
            "records were trimmed before they were read; going on from the oldest left");
        reader.trimmed_after = Some(after);
        reader.last_read = None;
        reader.start = Checkpoint::TrimHorizon;
        State::GettingIterator(StartPosition::TrimHorizon)
    }

    /// The source does not know the shard: finished if it left the stream, else `again`
    /// after a pause (a new shard not yet readable).
    async fn shard_not_found(&self, reader: &mut Reader<F::Processor>, error: &AwsError, again: State) -> State {
        match self.context.source.list_shards().await {
            Ok(shards) if !shards.iter().any(|s| s.id == self.shard_id) => {
                // Gone from the stream (past retention): it will never have more
                // records, and its children must not wait for it.
                tracing::warn!(application = %self.context.config.application, shard_id = %self.shard_id, %error,
                    "the shard left the stream; finishing it as ended");
                self.context.metrics.count(
                    names::SHARDS_VANISHED,
                    1,
                    &[(APPLICATION, &self.context.config.application)],
                );
                State::Finishing
            }
            _ => self.pause_then(reader.backoff.next_delay(), again).await,
        }
    }

    async fn read(&self, reader: &mut Reader<F::Processor>, iterator: String) -> State {
        let limit = self
            .context
            .config
            .max_records_per_read
            .min(self.context.source.max_read_limit());
        let read = match self.context.source.read(&self.shard_id, &iterator, limit).await {
            Ok(read) => {
                reader.backoff.reset();
                read
            }
            Err(error) => return self.after_read_error(reader, error, State::Reading(iterator)).await,
        };
        self.observe_lag(&read);
        let ReadResult {
            records,
            next_iterator,
            millis_behind_latest,
            outside_hash_range,
        } = read;
        if outside_hash_range > 0 {
            self.context.metrics.count(
                names::RECORDS_OUTSIDE_HASH_RANGE,
                outside_hash_range,
                &[(APPLICATION, &self.context.config.application)],
            );
            tracing::warn!(shard_id = %self.shard_id, records = outside_hash_range,
                "KPL user records with another shard's hash key dropped (their producer sends them there)");
        }
        if let Some(outcome) = self.deliver(reader, records, millis_behind_latest).await {
            return State::Done(outcome);
        }
        match next_iterator {
            Some(next) => {
                self.pause_then(self.context.config.idle_between_reads, State::Reading(next))
                    .await
            }
            None => State::Finishing,
        }
    }

    /// Hands what a read brought (records the start checkpoint covers skipped) to the
    /// processor, or tells it the read was empty; returns why the task must stop, if it must.
    async fn deliver(
        &self,
        reader: &mut Reader<F::Processor>,
        records: Vec<S::Record>,
        millis_behind_latest: Option<i64>,
    ) -> Option<ShardOutcome> {
        let records: Vec<S::Record> = records
            .into_iter()
            .filter(|r| !reader.start.covers(r.position()))
            .collect();
        if let Some(first) = records.first()
            && let Some(after) = reader.trimmed_after.take()
        {
            tracing::error!(application = %self.context.config.application, shard_id = %self.shard_id,
                lost_after = %after, lost_before = %first.position(), "records of this range were trimmed unread");
        }
        match records.last() {
            Some(last) => {
                reader.last_read = Some(last.position().clone());
                let application = self.context.config.application.as_str();
                let bytes: usize = records.iter().map(StreamRecord::size_bytes).sum();
                self.context
                    .metrics
                    .count(names::RECORDS_READ, records.len() as u64, &[(APPLICATION, application)]);
                self.context
                    .metrics
                    .count_bytes(names::BYTES_READ, bytes as u64, &[(APPLICATION, application)]);
                let batch = Batch {
                    shard_id: self.shard_id.clone(),
                    records,
                    millis_behind_latest,
                };
                self.process(reader, batch).await
            }
            None => match reader.processor.idle(&mut reader.checkpointer).await {
                Ok(()) => None,
                Err(error) => self.processing_failed(reader, error),
            },
        }
    }

    fn observe_lag(&self, read: &ReadResult<S::Record>) {
        let Some(lag) = read.millis_behind_latest else {
            return;
        };
        let application = self.context.config.application.as_str();
        self.context.metrics.gauge(
            names::MILLIS_BEHIND_LATEST,
            lag as f64,
            pipeline_runtime::Unit::Milliseconds,
            &[(APPLICATION, application), (SHARD, &self.shard_id)],
        );
        // Per application as well: one series to alarm and scale on, whatever the shards.
        self.context.metrics.sample(
            names::MILLIS_BEHIND_LATEST,
            lag as f64,
            pipeline_runtime::Unit::Milliseconds,
            &[(APPLICATION, application)],
        );
    }

    /// Hands a batch to the processor, retrying passing failures with the same records.
    async fn process(&self, reader: &mut Reader<F::Processor>, batch: Batch<S::Record>) -> Option<ShardOutcome> {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
        loop {
            // The lease must still be ours now, not only when the records were read.
            if let Some(outcome) = self.interrupted() {
                return Some(outcome);
            }
            // Delivered only once the processor has them: a flush at shutdown must not
            // checkpoint records it was never given.
            if let Some(last) = batch.records.last() {
                reader.checkpointer.delivered(last.position().clone());
            }
            match reader.processor.process(&batch, &mut reader.checkpointer).await {
                Ok(()) => return None,
                Err(error) => {
                    if let Some(outcome) = self.processing_failed(reader, error) {
                        return Some(outcome);
                    }
                    if let Some(outcome) = self.pause(backoff.next_delay()).await {
                        return Some(outcome);
                    }
                }
            }
        }
    }

    /// A processor error: the lease is gone, the consumer must stop, or retry (`None`).
    fn processing_failed(&self, reader: &mut Reader<F::Processor>, error: ProcessorError) -> Option<ShardOutcome> {
        if self.holding.stop.is_cancelled() {
            return Some(ShardOutcome::Lost);
        }
        self.context.metrics.count(
            names::PROCESSOR_ERRORS,
            1,
            &[(APPLICATION, &self.context.config.application)],
        );
        if !error.stops_the_consumer() {
            tracing::warn!(shard_id = %self.shard_id, %error, kind = %error.kind(), "processing failed; retrying the same records");
            return None;
        }
        tracing::error!(shard_id = %self.shard_id, %error, kind = %error.kind(), "processing failed for good; stopping");
        reader.failure = Some(ShardError::Processor {
            shard_id: self.shard_id.clone(),
            error,
        });
        Some(ShardOutcome::Failed)
    }

    /// Every record was delivered: the processor makes everything durable, then SHARD_END.
    async fn finish(&self, reader: &mut Reader<F::Processor>) -> State {
        match reader.processor.shard_ended(&mut reader.checkpointer).await {
            Ok(()) => {}
            Err(error) => {
                return match self.processing_failed(reader, error) {
                    Some(outcome) => State::Done(outcome),
                    None => self.pause_then(reader.backoff.next_delay(), State::Finishing).await,
                };
            }
        }
        match reader.checkpointer.checkpoint_shard_end().await {
            Ok(()) => State::Done(ShardOutcome::Ended),
            Err(crate::processor::CheckpointerError::LeaseLost(_)) => State::Done(ShardOutcome::Lost),
            Err(error) => match self.processing_failed(reader, error.into()) {
                Some(outcome) => State::Done(outcome),
                None => self.pause_then(reader.backoff.next_delay(), State::Finishing).await,
            },
        }
    }

    /// Tells the processor how the shard ended.
    async fn ended(&self, reader: &mut Reader<F::Processor>, outcome: ShardOutcome) {
        let application = self.context.config.application.as_str();
        match outcome {
            ShardOutcome::Lost | ShardOutcome::Expired => {
                reader.processor.lease_lost().await;
                let metric = if outcome == ShardOutcome::Lost {
                    names::LEASES_LOST
                } else {
                    names::LEASES_EXPIRED
                };
                self.context.metrics.count(metric, 1, &[(APPLICATION, application)]);
                tracing::warn!(%application, shard_id = %self.shard_id, ?outcome, "stopped reading the shard: the lease is no longer ours");
            }
            ShardOutcome::Stopped | ShardOutcome::HandedOff => {
                if let Err(error) = reader.processor.shutdown_requested(&mut reader.checkpointer).await {
                    tracing::warn!(shard_id = %self.shard_id, %error, "flush before handing the lease on failed; the next owner reads again from the last checkpoint");
                }
            }
            ShardOutcome::Ended => {
                self.context
                    .metrics
                    .count(names::SHARDS_ENDED, 1, &[(APPLICATION, application)]);
                tracing::info!(%application, shard_id = %self.shard_id, "shard ended");
            }
            ShardOutcome::Failed | ShardOutcome::Panicked => {
                // Nothing buffered may be made durable past a failure; the next owner re-reads.
                reader.processor.lease_lost().await;
            }
        }
    }
}

impl Classified for ShardError {
    fn kind(&self) -> ErrorKind {
        match self {
            ShardError::Read { error, .. } => error.kind(),
            ShardError::Processor { error, .. } => error.kind(),
        }
    }
}
