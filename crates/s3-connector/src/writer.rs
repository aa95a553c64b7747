//! The s3-connector's output: a sealed batch's files to the lake, then its pointer to
//! the `files` stream (the buffered processor checkpoints after both), then its metrics.
//!
//! Each write is retried while it fails for a passing reason (throttling, a server
//! error), until it succeeds or the lease is lost (the new owner re-reads from the
//! checkpoint). A write that can never succeed (access denied, a missing bucket or
//! key) stops the service with the error.

use pipeline_runtime::metrics::names::{
    self,
    dimension::{NORMALIZATION, OPERATION, REASON},
};
use pipeline_runtime::{Metrics, Unit};
use shard_consumer::buffered::{FlushError, Flushing, Output};
use tokio::time::Instant;

use crate::batch::SealedBatch;
use crate::sink::Sink;

/// Writes every shard's sealed batches.
pub struct Writer {
    pub sink: Sink,
    pub metrics: Metrics,
}

impl Output<SealedBatch> for Writer {
    async fn write(&self, sealed: &mut SealedBatch, flushing: &Flushing<'_>) -> Result<(), FlushError> {
        for object in [&sealed.events, &sealed.errors].into_iter().flatten() {
            let put = flushing.retry("S3 put", || async {
                let started = Instant::now();
                self.sink.put_batch_file(&object.key, object.body.clone()).await?;
                self.metrics.timing(names::S3_PUT_LATENCY, started.elapsed(), &[]);
                Ok(())
            });
            self.count_failure("S3 put", put.await)?;
        }
        if let Some(pointer) = &sealed.pointer {
            let publish = flushing.retry("pointer publish", || self.sink.publish_pointer(pointer));
            self.count_failure("pointer publish", publish.await)?;
        }
        Ok(())
    }

    fn flushed(&self, sealed: SealedBatch) {
        let metrics = &self.metrics;
        let tally = &sealed.tally;
        metrics.count(names::RECORDS_IN, tally.records_in, &[]);
        metrics.count_bytes(names::BYTES_IN, tally.bytes_in, &[]);
        metrics.count(names::VALID_EVENTS, tally.valid, &[]);
        metrics.count(names::EVENTS_WITH_UNKNOWN_FIELDS, tally.with_unknown_fields, &[]);
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

impl Writer {
    /// Counts a write that failed for good (the `WriteFailures` alarm watches it).
    fn count_failure(&self, operation: &'static str, result: Result<(), FlushError>) -> Result<(), FlushError> {
        if let Err(FlushError::Failed { .. }) = &result {
            self.metrics.count(names::WRITE_FAILURES, 1, &[(OPERATION, operation)]);
        }
        result
    }
}
