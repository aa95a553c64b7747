//! Reads one shard for as long as this worker holds its lease.

use std::sync::Arc;
use std::time::Duration;

use pipeline_runtime::Metrics;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::{ConsumerConfig, InitialPosition};
use crate::error::{Classified, ErrorKind, ReadError};
use crate::lease_table::LeaseTable;
use crate::position::{Checkpoint, RecordPosition};
use crate::processor::{Batch, Checkpointer, ProcessorError, ProcessorFactory, RecordProcessor, SharedHold};
use crate::source::{Source, StartPosition, StreamRecord};

/// How a shard task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardOutcome {
    /// Read to its end; SHARD_END is checkpointed.
    Ended,
    /// The lease went to another worker.
    Lost,
    /// The worker is stopping.
    Stopped,
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
    pub source: S,
    pub factory: Arc<F>,
    pub table: LeaseTable,
    pub config: Arc<ConsumerConfig>,
    pub metrics: Metrics,
    pub shard_id: String,
    pub parent_shard_ids: Vec<String>,
    pub hold: SharedHold,
    pub lost: CancellationToken,
    pub shutdown: CancellationToken,
}

impl<S: Source, F: ProcessorFactory<S::Record>> ShardTask<S, F> {
    pub async fn run(self) -> (ShardOutcome, Option<ShardError>) {
        let mut failure = None;
        let outcome = self.run_to_outcome(&mut failure).await;
        (outcome, failure)
    }

    async fn run_to_outcome(&self, failure: &mut Option<ShardError>) -> ShardOutcome {
        if let Some(outcome) = self.wait_for_parents().await {
            return outcome;
        }
        let checkpoint = self.hold.lock().await.checkpoint.clone();
        if checkpoint.is_shard_end() {
            return ShardOutcome::Ended;
        }
        let mut processor = self.factory.create(&self.shard_id);
        let mut checkpointer = Checkpointer::new(
            self.table.clone(),
            &self.shard_id,
            &self.config.worker_id,
            self.hold.clone(),
            self.lost.clone(),
        );
        processor.initialize(&self.shard_id, &checkpoint).await;
        tracing::info!(application = %self.config.application, shard_id = %self.shard_id, %checkpoint, "shard started");
        let outcome = self
            .read_loop(&mut processor, &mut checkpointer, checkpoint, failure)
            .await;
        match outcome {
            ShardOutcome::Lost => {
                processor.lease_lost().await;
                self.metrics
                    .count("LeasesLost", 1, &[("Application", &self.config.application)]);
                tracing::warn!(application = %self.config.application, shard_id = %self.shard_id, "lease lost");
            }
            ShardOutcome::Stopped => {
                if let Err(error) = processor.shutdown_requested(&mut checkpointer).await {
                    tracing::warn!(shard_id = %self.shard_id, %error, "flush at shutdown failed; the next owner reads again from the last checkpoint");
                }
            }
            ShardOutcome::Ended => {
                self.metrics
                    .count("ShardsEnded", 1, &[("Application", &self.config.application)]);
                tracing::info!(application = %self.config.application, shard_id = %self.shard_id, "shard ended");
            }
            ShardOutcome::Failed | ShardOutcome::Panicked => {
                // Nothing buffered may be made durable past a failure; the next owner re-reads.
                processor.lease_lost().await;
            }
        }
        outcome
    }

    fn interrupted(&self) -> Option<ShardOutcome> {
        if self.lost.is_cancelled() {
            Some(ShardOutcome::Lost)
        } else if self.shutdown.is_cancelled() {
            Some(ShardOutcome::Stopped)
        } else {
            None
        }
    }

    async fn pause(&self, duration: Duration) -> Option<ShardOutcome> {
        tokio::select! {
            () = tokio::time::sleep(duration) => self.interrupted(),
            () = self.lost.cancelled() => Some(ShardOutcome::Lost),
            () = self.shutdown.cancelled() => Some(ShardOutcome::Stopped),
        }
    }

    /// A child shard starts only once every parent with a lease is at SHARD_END, so
    /// records of one partition key are never processed out of order across a reshard.
    async fn wait_for_parents(&self) -> Option<ShardOutcome> {
        let mut logged = false;
        loop {
            if let Some(outcome) = self.interrupted() {
                return Some(outcome);
            }
            let mut waiting = Vec::new();
            let mut failed = false;
            for parent in &self.parent_shard_ids {
                match self.table.get(parent).await {
                    Ok(Some(lease)) if !lease.checkpoint.is_shard_end() => waiting.push(parent.clone()),
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(shard_id = %self.shard_id, %error, "reading parent leases failed");
                        failed = true;
                    }
                }
            }
            if waiting.is_empty() && !failed {
                return None;
            }
            if !logged && !waiting.is_empty() {
                tracing::info!(shard_id = %self.shard_id, parents = ?waiting, "waiting for parent shards to end");
                logged = true;
            }
            if let Some(outcome) = self
                .pause(self.config.idle_between_reads.max(self.config.taker_interval / 2))
                .await
            {
                return Some(outcome);
            }
        }
    }

    fn start_position(&self, checkpoint: &Checkpoint) -> StartPosition {
        match checkpoint {
            Checkpoint::TrimHorizon | Checkpoint::ShardEnd => StartPosition::TrimHorizon,
            Checkpoint::Latest => StartPosition::Latest,
            Checkpoint::AtTimestamp => match self.config.initial_position {
                InitialPosition::AtTimestamp(ms) => StartPosition::AtTimestamp(ms),
                _ => StartPosition::TrimHorizon,
            },
            // AT, not AFTER: the checkpointed record may be an aggregate only partly
            // processed; records the checkpoint covers are skipped below.
            Checkpoint::At(position) => StartPosition::AtSequence(position.sequence.clone()),
        }
    }

    /// After a failed read: for throttling and transient failures, waits a backoff step
    /// and says retry (`Ok(None)`), or how the wait was interrupted; any other error is
    /// handed back.
    async fn after_failure(&self, backoff: &mut Backoff, error: ReadError) -> Result<Option<ShardOutcome>, ReadError> {
        if !error.kind().is_retryable() || matches!(error, ReadError::IteratorExpired) {
            return Err(error);
        }
        if error.kind() == ErrorKind::Throttled {
            self.metrics
                .count("Throttles", 1, &[("Application", &self.config.application)]);
        }
        tracing::debug!(shard_id = %self.shard_id, %error, "retrying");
        Ok(self.pause(backoff.next_delay()).await)
    }

    /// A read error this process cannot get past ends the task (and the consumer).
    fn fail_read(&self, error: ReadError, failure: &mut Option<ShardError>) -> Option<ShardOutcome> {
        if error.kind() != ErrorKind::Fatal {
            return None;
        }
        tracing::error!(shard_id = %self.shard_id, %error, "cannot read the shard; stopping");
        *failure = Some(ShardError::Read {
            shard_id: self.shard_id.clone(),
            error,
        });
        Some(ShardOutcome::Failed)
    }

    async fn read_loop(
        &self,
        processor: &mut F::Processor,
        checkpointer: &mut Checkpointer,
        checkpoint: Checkpoint,
        failure: &mut Option<ShardError>,
    ) -> ShardOutcome {
        let application = self.config.application.as_str();
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        let mut last_read: Option<RecordPosition> = None;
        let mut iterator: Option<String> = None;
        loop {
            if let Some(outcome) = self.interrupted() {
                return outcome;
            }
            let current_iterator = match iterator.take() {
                Some(it) => it,
                None => {
                    let start = match &last_read {
                        Some(position) => StartPosition::AfterSequence(position.sequence.clone()),
                        None => self.start_position(&checkpoint),
                    };
                    match self.source.shard_iterator(&self.shard_id, &start).await {
                        Ok(it) => {
                            backoff.reset();
                            it
                        }
                        Err(error) => match self.after_failure(&mut backoff, error).await {
                            Ok(None) => continue,
                            Ok(Some(outcome)) => return outcome,
                            Err(error) => {
                                tracing::error!(shard_id = %self.shard_id, %error, "cannot get a shard iterator");
                                if let Some(outcome) = self.fail_read(error, failure) {
                                    return outcome;
                                }
                                if let Some(outcome) = self.pause(backoff.next_delay()).await {
                                    return outcome;
                                }
                                continue;
                            }
                        },
                    }
                }
            };
            let limit = self.config.max_records_per_read.min(self.source.max_read_limit());
            let answer = match self.source.read(&self.shard_id, &current_iterator, limit).await {
                Ok(read) => {
                    backoff.reset();
                    Ok(read)
                }
                Err(error) => match self.after_failure(&mut backoff, error).await {
                    Ok(None) => {
                        iterator = Some(current_iterator);
                        continue;
                    }
                    Ok(Some(outcome)) => return outcome,
                    Err(error) => Err(error),
                },
            };
            let read = match answer {
                Ok(read) => read,
                Err(ReadError::IteratorExpired) => {
                    tracing::info!(shard_id = %self.shard_id, "shard iterator expired; getting a new one");
                    continue;
                }
                Err(error @ ReadError::Trimmed(_)) => {
                    // Records between the checkpoint and the trim horizon are gone from
                    // the stream; say so loudly and carry on from what is left.
                    self.metrics.count("TrimmedReads", 1, &[("Application", application)]);
                    tracing::error!(shard_id = %self.shard_id, %error, "records past retention were trimmed before they were read");
                    last_read = None;
                    iterator = self
                        .source
                        .shard_iterator(&self.shard_id, &StartPosition::TrimHorizon)
                        .await
                        .ok();
                    continue;
                }
                Err(error) => {
                    tracing::error!(shard_id = %self.shard_id, %error, "read failed");
                    if let Some(outcome) = self.fail_read(error, failure) {
                        return outcome;
                    }
                    if let Some(outcome) = self.pause(backoff.next_delay()).await {
                        return outcome;
                    }
                    continue;
                }
            };
            if let Some(lag) = read.millis_behind_latest {
                self.metrics.gauge(
                    "MillisBehindLatest",
                    lag as f64,
                    pipeline_runtime::Unit::Milliseconds,
                    &[("Application", application), ("Shard", &self.shard_id)],
                );
                // Per application as well: one series to alarm and scale on, whatever the shards.
                self.metrics.sample(
                    "MillisBehindLatest",
                    lag as f64,
                    pipeline_runtime::Unit::Milliseconds,
                    &[("Application", application)],
                );
            }
            let records: Vec<S::Record> = read
                .records
                .into_iter()
                .filter(|r| !checkpoint.covers(r.position()))
                .collect();
            if let Some(last) = records.last() {
                last_read = Some(last.position().clone());
                checkpointer.delivered(last.position().clone());
                let bytes: usize = records.iter().map(StreamRecord::size_bytes).sum();
                self.metrics
                    .count("RecordsRead", records.len() as u64, &[("Application", application)]);
                self.metrics
                    .count_bytes("BytesRead", bytes as u64, &[("Application", application)]);
                let batch = Batch {
                    shard_id: self.shard_id.clone(),
                    records,
                    millis_behind_latest: read.millis_behind_latest,
                };
                if let Some(outcome) = self.process(processor, checkpointer, batch, failure).await {
                    return outcome;
                }
            } else if let Err(error) = processor.idle(checkpointer).await {
                if self.lost.is_cancelled() {
                    return ShardOutcome::Lost;
                }
                if let Some(outcome) = self.fail_processing(error, failure) {
                    return outcome;
                }
            }
            match read.next_iterator {
                Some(next) => iterator = Some(next),
                None => return self.finish(processor, checkpointer, failure).await,
            }
            if let Some(outcome) = self.pause(self.config.idle_between_reads).await {
                return outcome;
            }
        }
    }

    /// A processor error that stops the consumer ends the task; others are retried.
    fn fail_processing(&self, error: ProcessorError, failure: &mut Option<ShardError>) -> Option<ShardOutcome> {
        self.metrics
            .count("ProcessorErrors", 1, &[("Application", &self.config.application)]);
        if !error.stops_the_consumer() {
            tracing::warn!(shard_id = %self.shard_id, %error, kind = %error.kind(), "processing failed; retrying the same records");
            return None;
        }
        tracing::error!(shard_id = %self.shard_id, %error, kind = %error.kind(), "processing failed for good; stopping");
        *failure = Some(ShardError::Processor {
            shard_id: self.shard_id.clone(),
            error,
        });
        Some(ShardOutcome::Failed)
    }

    async fn process(
        &self,
        processor: &mut F::Processor,
        checkpointer: &mut Checkpointer,
        batch: Batch<S::Record>,
        failure: &mut Option<ShardError>,
    ) -> Option<ShardOutcome> {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
        loop {
            match processor.process(&batch, checkpointer).await {
                Ok(()) => return None,
                Err(error) => {
                    if self.lost.is_cancelled() {
                        return Some(ShardOutcome::Lost);
                    }
                    if let Some(outcome) = self.fail_processing(error, failure) {
                        return Some(outcome);
                    }
                    if let Some(outcome) = self.pause(backoff.next_delay()).await {
                        return Some(outcome);
                    }
                }
            }
        }
    }

    async fn finish(
        &self,
        processor: &mut F::Processor,
        checkpointer: &mut Checkpointer,
        failure: &mut Option<ShardError>,
    ) -> ShardOutcome {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
        loop {
            match processor.shard_ended(checkpointer).await {
                Ok(()) => break,
                Err(error) => {
                    if self.lost.is_cancelled() {
                        return ShardOutcome::Lost;
                    }
                    if let Some(outcome) = self.fail_processing(error, failure) {
                        return outcome;
                    }
                    if let Some(outcome) = self.pause(backoff.next_delay()).await {
                        return outcome;
                    }
                }
            }
        }
        loop {
            match checkpointer.checkpoint_shard_end().await {
                Ok(()) => return ShardOutcome::Ended,
                Err(crate::processor::CheckpointerError::LeaseLost(_)) => return ShardOutcome::Lost,
                Err(error) => {
                    if let Some(outcome) = self.fail_processing(error.into(), failure) {
                        return outcome;
                    }
                    if let Some(outcome) = self.pause(backoff.next_delay()).await {
                        return outcome;
                    }
                }
            }
        }
    }
}
