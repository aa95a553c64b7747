//! Per `files` shard: collect pointers, then load them in one warehouse transaction
//! and checkpoint. A load is retried with backoff until it commits, the lease moves
//! or the process stops; nothing is checkpointed before the commit.

use std::sync::Arc;
use std::time::Duration;

use event_model::FilePointer;
use pipeline_runtime::{Metrics, Unit};
use shard_consumer::backoff::Backoff;
use shard_consumer::kinesis::KinesisRecord;
use shard_consumer::{
    Batch, Checkpointer, CheckpointerError, ProcessorError, ProcessorFactory, RecordPosition, RecordProcessor,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use warehouse::manifest::{self, Manifest, manifest_key};
use warehouse::{LoadBatch, Warehouse};

/// When pointers are loaded: whichever limit is reached first.
#[derive(Debug, Clone, Copy)]
pub struct LoadLimits {
    pub max_files: usize,
    /// Compressed bytes of the files.
    pub max_bytes: u64,
    pub max_age: Duration,
}

pub struct Shared {
    pub warehouse: Warehouse,
    pub s3: aws_sdk_s3::Client,
    pub bucket: String,
    pub limits: LoadLimits,
    pub metrics: Metrics,
    pub shutdown: CancellationToken,
}

pub struct LoaderFactory(pub Arc<Shared>);

impl ProcessorFactory<KinesisRecord> for LoaderFactory {
    type Processor = Loader;
    fn create(&self, _shard_id: &str) -> Loader {
        Loader {
            shared: self.0.clone(),
            pointers: Vec::new(),
            first: None,
            last: None,
            started: None,
        }
    }
}

pub struct Loader {
    shared: Arc<Shared>,
    pointers: Vec<FilePointer>,
    /// First and last `files` records of the pending load.
    first: Option<RecordPosition>,
    last: Option<RecordPosition>,
    started: Option<Instant>,
}

#[derive(Debug, thiserror::Error)]
enum Stop {
    #[error("the shard's lease was lost")]
    LeaseLost,
    #[error("stopping before the load committed; nothing was checkpointed past it")]
    ShuttingDown,
}

impl Loader {
    fn is_due(&self, now: Instant) -> bool {
        let limits = &self.shared.limits;
        let bytes: u64 = self.pointers.iter().map(|p| p.bytes).sum();
        self.started.is_some_and(|s| now.duration_since(s) >= limits.max_age)
            || self.pointers.len() >= limits.max_files
            || bytes >= limits.max_bytes
    }

    async fn pause(&self, backoff: &mut Backoff, checkpointer: &Checkpointer) -> Result<(), Stop> {
        tokio::select! {
            () = tokio::time::sleep(backoff.next_delay()) => {}
            () = self.shared.shutdown.cancelled() => return Err(Stop::ShuttingDown),
        }
        if checkpointer.is_lease_lost() {
            return Err(Stop::LeaseLost);
        }
        Ok(())
    }

    async fn flush(&mut self, checkpointer: &mut Checkpointer) -> Result<(), Stop> {
        let (Some(first), Some(last)) = (self.first.clone(), self.last.clone()) else {
            return Ok(());
        };
        let shared = self.shared.clone();
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(60));
        if !self.pointers.is_empty() {
            let batch = LoadBatch {
                bucket: shared.bucket.clone(),
                files: self.pointers.clone(),
                manifest_key: manifest_key(first.sequence.as_str(), last.sequence.as_str()),
            };
            loop {
                let started = Instant::now();
                let written = manifest::write(
                    &shared.s3,
                    &batch.bucket,
                    &batch.manifest_key,
                    &Manifest::for_files(&batch.files),
                )
                .await;
                let loaded = match written {
                    Ok(()) => shared.warehouse.load(&batch).await,
                    Err(error) => Err(error),
                };
                match loaded {
                    Ok(report) => {
                        let m = &shared.metrics;
                        m.count("FilesLoaded", report.files_loaded, &[]);
                        m.count("FilesSkipped", report.files_skipped, &[]);
                        m.count("RowsStaged", report.rows_staged, &[]);
                        m.count("DuplicatesInBatch", report.duplicates_in_batch, &[]);
                        m.count("DuplicatesInTable", report.duplicates_in_table, &[]);
                        m.count("RowsInserted", report.rows_inserted, &[]);
                        m.timing("LoadLatency", started.elapsed(), &[]);
                        tracing::info!(manifest = %batch.manifest_key, files = batch.files.len(), rows_inserted = report.rows_inserted,
                            duplicates_in_batch = report.duplicates_in_batch, duplicates_in_table = report.duplicates_in_table, "batch loaded");
                        break;
                    }
                    Err(error) => {
                        shared.metrics.count("LoadFailures", 1, &[]);
                        tracing::error!(manifest = %batch.manifest_key, %error, "load failed; nothing committed, retrying");
                        self.pause(&mut backoff, checkpointer).await?;
                    }
                }
            }
        }
        loop {
            match checkpointer.checkpoint(&last).await {
                Ok(()) => break,
                Err(CheckpointerError::LeaseLost(_)) => return Err(Stop::LeaseLost),
                Err(error) => {
                    tracing::warn!(%error, "checkpoint failed; retrying");
                    self.pause(&mut backoff, checkpointer).await?;
                }
            }
        }
        self.pointers.clear();
        self.first = None;
        self.last = None;
        self.started = None;
        Ok(())
    }
}

impl RecordProcessor<KinesisRecord> for Loader {
    async fn process(
        &mut self,
        batch: &Batch<KinesisRecord>,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        let now = Instant::now();
        for record in &batch.records {
            // A retried call brings the same records again.
            if self.last.as_ref().is_some_and(|last| record.position <= *last) {
                continue;
            }
            match FilePointer::from_json(&record.data) {
                // A producer's retried put can publish one pointer twice, even in one load;
                // the batch is built here for both back ends (and the Redshift manifest), so
                // here is where a file is kept once. (At most LOAD_MAX_FILES to compare.)
                Ok(pointer) if self.pointers.iter().any(|p| p.key == pointer.key) => {
                    self.shared.metrics.count("DuplicatePointers", 1, &[]);
                    tracing::info!(key = %pointer.key, sequence = %record.position, "pointer already pending; skipped");
                }
                Ok(pointer) => self.pointers.push(pointer),
                Err(error) => {
                    // Not ours to load; loud, counted, and the record stays on the stream.
                    self.shared.metrics.count("InvalidPointers", 1, &[]);
                    tracing::error!(sequence = %record.position, %error, data = %String::from_utf8_lossy(&record.data), "not a file pointer; skipped");
                }
            }
            if self.first.is_none() {
                self.first = Some(record.position.clone());
                self.started = Some(now);
            }
            self.last = Some(record.position.clone());
        }
        self.shared
            .metrics
            .sample("PendingFiles", self.pointers.len() as f64, Unit::Count, &[]);
        if self.is_due(now) {
            self.flush(checkpointer).await?;
        }
        Ok(())
    }

    async fn idle(&mut self, checkpointer: &mut Checkpointer) -> Result<(), ProcessorError> {
        if self.is_due(Instant::now()) {
            self.flush(checkpointer).await?;
        }
        Ok(())
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) -> Result<(), ProcessorError> {
        Ok(self.flush(checkpointer).await?)
    }

    async fn lease_lost(&mut self) {
        self.pointers.clear();
        self.first = None;
        self.last = None;
        self.started = None;
    }

    async fn shutdown_requested(&mut self, checkpointer: &mut Checkpointer) -> Result<(), ProcessorError> {
        // A load may still fit in the deadline; if not, the next owner repeats it.
        Ok(self.flush(checkpointer).await?)
    }
}
