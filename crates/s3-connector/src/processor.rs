//! The per-shard processor: buffer, flush to S3, publish the pointer, then checkpoint.
//!
//! A flush retries each step while it fails for a passing reason (throttling, a server
//! error), until it succeeds, the lease is lost (the new owner re-reads from the
//! checkpoint) or the process is stopped (nothing is checkpointed past what was
//! written). A write that can never succeed (access denied, a missing bucket or key)
//! stops the service with the error. Memory is bounded by one semaphore shared by
//! every shard: when it is exhausted a shard flushes its own batch and then waits,
//! so reading stops instead of the buffers growing.

use std::sync::Arc;

use aws_sdk_kinesis::primitives::Blob;
use event_model::Rules;
use pipeline_runtime::error::{AwsError, Classified, ErrorKind};
use pipeline_runtime::metrics::names::{
    self,
    dimension::{NORMALIZATION, OPERATION, REASON},
};
use pipeline_runtime::retry::{RetryError, RetryPolicy, retry};
use pipeline_runtime::s3::Lake;
use pipeline_runtime::{Metrics, Unit};
use shard_consumer::kinesis::KinesisRecord;
use shard_consumer::{Batch, Checkpointer, CheckpointerError, ProcessorError, ProcessorFactory, RecordProcessor};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::batch::{FlushLimits, SealedBatch, ShardBatch};

/// What every shard's processor shares.
pub struct Shared {
    /// The bucket and its encryption.
    pub lake: Lake,
    pub kinesis: aws_sdk_kinesis::Client,
    pub files_stream: String,
    pub rules: Rules,
    pub limits: FlushLimits,
    pub gzip_level: u32,
    /// Bytes of buffered records, across shards.
    pub memory: Arc<Semaphore>,
    pub memory_cap: usize,
    pub metrics: Metrics,
    pub shutdown: CancellationToken,
}

/// Why a flush stopped before its checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum FlushError {
    #[error("the shard's lease was lost; the new owner re-reads from the last checkpoint")]
    LeaseLost,
    #[error("shutting down before the batch was durable; nothing was checkpointed past it")]
    ShuttingDown,
    /// A write that retrying cannot fix: the service stops with it.
    #[error("{operation} failed for good: {}", .error.explain())]
    Failed { operation: &'static str, error: AwsError },
    #[error("checkpoint failed for good: {0}")]
    Checkpoint(CheckpointerError),
}

impl Classified for FlushError {
    fn kind(&self) -> ErrorKind {
        match self {
            FlushError::LeaseLost | FlushError::ShuttingDown => ErrorKind::Transient,
            // Our own requests, not inputs: a permanent failure cannot be skipped either.
            FlushError::Failed { error, .. } => error.kind.of_own_request(),
            FlushError::Checkpoint(error) => error.kind().of_own_request(),
        }
    }
}

pub struct S3ProcessorFactory {
    pub shared: Arc<Shared>,
}

impl ProcessorFactory<KinesisRecord> for S3ProcessorFactory {
    type Processor = S3Processor;
    fn create(&self, shard_id: &str) -> S3Processor {
        S3Processor {
            shared: self.shared.clone(),
            batch: ShardBatch::new(shard_id, self.shared.gzip_level),
            permits: None,
        }
    }
}

pub struct S3Processor {
    shared: Arc<Shared>,
    batch: ShardBatch,
    permits: Option<OwnedSemaphorePermit>,
}

impl S3Processor {
    /// Takes `bytes` of the shared memory budget, flushing this shard's batch first
    /// when the budget is spent, then waiting for other shards to flush theirs.
    async fn reserve(&mut self, bytes: usize, checkpointer: &mut Checkpointer) -> Result<(), ProcessorError> {
        let wanted = u32::try_from(bytes.clamp(1, self.shared.memory_cap)).unwrap_or(u32::MAX);
        let permit = match self.shared.memory.clone().try_acquire_many_owned(wanted) {
            Ok(permit) => permit,
            Err(_) => {
                self.shared.metrics.count(names::BACK_PRESSURE_WAITS, 1, &[]);
                self.flush(checkpointer).await?;
                tokio::select! {
                    permit = self.shared.memory.clone().acquire_many_owned(wanted) => permit.map_err(ProcessorError::fatal)?,
                    () = self.shared.shutdown.cancelled() => return Err(FlushError::ShuttingDown.into()),
                }
            }
        };
        match &mut self.permits {
            Some(held) => held.merge(permit),
            None => self.permits = Some(permit),
        }
        Ok(())
    }

    /// Writes the open batch and checkpoints after it; no-op when it is empty.
    async fn flush(&mut self, checkpointer: &mut Checkpointer) -> Result<(), FlushError> {
        let now = Instant::now();
        let fresh = self.batch.renewed();
        let Some(sealed) = std::mem::replace(&mut self.batch, fresh).seal(&self.shared.lake.bucket, now) else {
            return Ok(());
        };
        // The memory stays reserved until the batch is durable.
        let permits = self.permits.take();
        let result = self.write(&sealed, checkpointer).await;
        drop(permits);
        result?;
        self.record_metrics(&sealed);
        Ok(())
    }

    async fn write(&self, sealed: &SealedBatch, checkpointer: &mut Checkpointer) -> Result<(), FlushError> {
        for object in [&sealed.events, &sealed.errors].into_iter().flatten() {
            self.retry("S3 put", checkpointer, || async {
                let started = Instant::now();
                self.shared
                    .lake
                    .put_gzip_json_lines(&object.key, object.body.clone())
                    .await?;
                self.shared
                    .metrics
                    .timing(names::S3_PUT_LATENCY, started.elapsed(), &[]);
                Ok(())
            })
            .await?;
        }
        if let Some(pointer) = &sealed.pointer {
            let data = pointer.to_json();
            self.retry("pointer publish", checkpointer, || async {
                self.shared
                    .kinesis
                    .put_record()
                    .stream_name(&self.shared.files_stream)
                    // One source shard's pointers stay in order on one files shard.
                    .partition_key(&pointer.shard)
                    .data(Blob::new(data.clone()))
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| AwsError::from_sdk("kinesis:PutRecord", e))
            })
            .await?;
        }
        let checkpointed = retry(&RetryPolicy::SHARD_OUTPUT, checkpointer.lease_lost_token(), || {
            checkpointer.checkpoint(&sealed.last)
        })
        .await;
        match checkpointed {
            Ok(()) => Ok(()),
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

    /// Runs `operation` under [`RetryPolicy::SHARD_OUTPUT`]; every retry is the same
    /// request, so a write that succeeded unseen is repeated harmlessly (same key, same
    /// pointer). Shutdown does not interrupt it: the service's deadline bounds how long
    /// a stopping process keeps trying to make its batch durable.
    async fn retry<T, F, Fut>(
        &self,
        what: &'static str,
        checkpointer: &Checkpointer,
        operation: F,
    ) -> Result<T, FlushError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, AwsError>>,
    {
        let written = retry(&RetryPolicy::SHARD_OUTPUT, checkpointer.lease_lost_token(), operation).await;
        match written {
            Ok(value) => Ok(value),
            Err(RetryError::Stopped { .. }) => Err(FlushError::LeaseLost),
            Err(RetryError::Failed { error, attempts }) => {
                self.shared
                    .metrics
                    .count(names::WRITE_FAILURES, 1, &[(OPERATION, what)]);
                tracing::error!(shard_id = %checkpointer.shard_id(), operation = what, attempts, %error, "write failed for good");
                Err(FlushError::Failed { operation: what, error })
            }
        }
    }

    fn record_metrics(&self, sealed: &SealedBatch) {
        let metrics = &self.shared.metrics;
        let tally = &sealed.tally;
        metrics.count(names::RECORDS_IN, tally.records_in, &[]);
        metrics.count_bytes(names::BYTES_IN, tally.bytes_in, &[]);
        metrics.count(names::VALID_EVENTS, tally.valid, &[]);
        for (reason, count) in &tally.rejected {
            metrics.count(names::REJECTED_RECORDS, *count, &[(REASON, reason)]);
        }
        // The total too: the reject-rate alarm divides it by RecordsIn.
        metrics.count(names::REJECTED_RECORDS, tally.rejected.values().sum(), &[]);
        for (kind, count) in &tally.normalized {
            metrics.count(names::NORMALIZED_EVENTS, *count, &[(NORMALIZATION, kind)]);
        }
        let written: u64 = [&sealed.events, &sealed.errors]
            .into_iter()
            .flatten()
            .map(|o| o.body.len() as u64)
            .sum();
        metrics.count_bytes(names::BYTES_OUT, written, &[]);
        metrics.count(names::BATCHES_WRITTEN, 1, &[]);
        metrics.sample(
            names::BATCH_AGE_AT_FLUSH,
            sealed.age.as_secs_f64() * 1000.0,
            Unit::Milliseconds,
            &[],
        );
        tracing::debug!(
            events = ?sealed.events.as_ref().map(|o| &o.key),
            records = tally.records_in,
            rejected = tally.rejected.values().sum::<u64>(),
            "batch written"
        );
    }
}

impl RecordProcessor<KinesisRecord> for S3Processor {
    async fn process(
        &mut self,
        batch: &Batch<KinesisRecord>,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        let records = self.batch.unseen(&batch.records);
        if records.is_empty() {
            return Ok(());
        }
        let bytes: usize = records.iter().map(|r| r.data.len()).sum();
        self.reserve(bytes, checkpointer).await?;
        let now = Instant::now();
        let records = self.batch.unseen(&batch.records);
        self.batch.add_all(records, &self.shared.rules, now);
        if self.batch.is_due(&self.shared.limits, now) {
            self.flush(checkpointer).await?;
        }
        Ok(())
    }

    async fn idle(&mut self, checkpointer: &mut Checkpointer) -> Result<(), ProcessorError> {
        if self.batch.is_due(&self.shared.limits, Instant::now()) {
            self.flush(checkpointer).await?;
        }
        Ok(())
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) -> Result<(), ProcessorError> {
        Ok(self.flush(checkpointer).await?)
    }

    async fn lease_lost(&mut self) {
        self.batch = self.batch.renewed();
        self.permits = None;
    }

    async fn shutdown_requested(&mut self, checkpointer: &mut Checkpointer) -> Result<(), ProcessorError> {
        Ok(self.flush(checkpointer).await?)
    }
}
