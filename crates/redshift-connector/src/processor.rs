//! Per `files` shard: collect pointers, then load them in one warehouse transaction and
//! checkpoint. Nothing is checkpointed before the load committed.
//!
//! A file the warehouse names as the cause of a failed load (missing, not gzip, a line
//! it refuses) is taken out of its load, which goes on at once, and retried alone for
//! `DEAD_LETTER_AFTER_SECS`; then it is written to `dead-letters/` with the error. A
//! load that fails without a name (the Data API reports a failed statement as text
//! only) is split: each file is loaded alone, and those that fail while others load
//! are held the same way; when none loads, the warehouse is at fault, and the whole
//! load is retried with backoff, dead-lettering nothing. One bad file costs one dead
//! letter and holds back only the checkpoint, never the shard's other files. A record
//! that is not a pointer to the lake goes to the dead letters at once. A failure that
//! is nobody's input (permissions, a missing table) stops the service.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use event_model::{DeadLetter, FilePointer, RejectedRecord};
use futures::StreamExt;
use pipeline_runtime::clock::now_ms;
use pipeline_runtime::error::{AwsError, Classified, ErrorKind};
use pipeline_runtime::metrics::names::{self, dimension::KIND};
use pipeline_runtime::retry::{RetryError, RetryPolicy, retry};
use pipeline_runtime::s3::Lake;
use pipeline_runtime::{Metrics, Unit};
use shard_consumer::backoff::Backoff;
use shard_consumer::kinesis::KinesisRecord;
use shard_consumer::{
    Batch, Checkpointer, CheckpointerError, ProcessorError, ProcessorFactory, RecordPosition, RecordProcessor,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use warehouse::manifest::Manifest;
use warehouse::{LoadBatch, Warehouse, WarehouseError};

use crate::pending::{Added, Held, LoadLimits, PendingLoad, Refusal};

/// A held file's next try: 5 s after its first refusal, doubling to at most a minute.
fn retry_held_in(attempts: u32) -> Duration {
    Duration::from_secs(5)
        .saturating_mul(1u32 << attempts.saturating_sub(1).min(4))
        .min(Duration::from_secs(60))
}

/// How one attempt of a load ended.
enum Loaded {
    Committed,
    /// The warehouse refused this file of the load: the rest can go without it.
    Refused {
        key: String,
        refusal: Refusal,
    },
    /// The load failed, naming no file; passing or not, the error says.
    Failed(WarehouseError),
}

pub struct Shared {
    pub warehouse: Warehouse,
    /// The bucket: manifests and dead letters are written to it.
    pub lake: Lake,
    pub limits: LoadLimits,
    /// How long a file the warehouse keeps refusing is retried before it is dead-lettered.
    pub dead_letter_after: Duration,
    pub metrics: Metrics,
    pub shutdown: CancellationToken,
}

pub struct LoaderFactory(pub Arc<Shared>);

impl ProcessorFactory<KinesisRecord> for LoaderFactory {
    type Processor = Loader;
    fn create(&self, shard_id: &str) -> Loader {
        Loader {
            shared: self.0.clone(),
            shard_id: shard_id.to_string(),
            load: PendingLoad::default(),
        }
    }
}

pub struct Loader {
    shared: Arc<Shared>,
    shard_id: String,
    load: PendingLoad,
}

/// Why a flush stopped before its checkpoint.
#[derive(Debug, thiserror::Error)]
enum Stop {
    #[error("the shard's lease was lost")]
    LeaseLost,
    #[error("stopping before the load committed; nothing was checkpointed past it")]
    ShuttingDown,
    #[error("the load cannot succeed: {0}")]
    Warehouse(WarehouseError),
    #[error("{}", .0.explain())]
    Lake(AwsError),
    #[error("checkpoint: {0}")]
    Checkpoint(CheckpointerError),
    #[error("the load of {manifest} was refused for {key}, which it does not hold")]
    Misattributed { manifest: String, key: String },
}

impl Classified for Stop {
    fn kind(&self) -> ErrorKind {
        match self {
            Stop::LeaseLost | Stop::ShuttingDown => ErrorKind::Transient,
            // Nobody's input, and our own requests: what stops here stops the service.
            Stop::Warehouse(_) | Stop::Lake(_) | Stop::Misattributed { .. } => ErrorKind::Fatal,
            Stop::Checkpoint(error) => error.kind().of_own_request(),
        }
    }
}

impl Loader {
    async fn pause(&self, backoff: &mut Backoff, checkpointer: &Checkpointer) -> Result<(), Stop> {
        tokio::select! {
            () = tokio::time::sleep(backoff.next_delay()) => {}
            () = self.shared.shutdown.cancelled() => return Err(Stop::ShuttingDown),
            () = checkpointer.lease_lost_token().cancelled() => return Err(Stop::LeaseLost),
        }
        Ok(())
    }

    /// Writes a dead letter (retried like any output the shard cannot skip).
    async fn dead_letter(&self, letter: DeadLetter, checkpointer: &Checkpointer) -> Result<(), Stop> {
        let key = letter.key();
        let body = Bytes::from(letter.to_json());
        let written = retry(&RetryPolicy::SHARD_OUTPUT, checkpointer.lease_lost_token(), || {
            self.shared.lake.put_json(&key, body.clone())
        })
        .await;
        match written {
            Ok(()) => {
                self.shared.metrics.count(names::DEAD_LETTER_POINTERS, 1, &[]);
                tracing::error!(%key, kind = %letter.kind, error = %letter.error, line = ?letter.line,
                    file = ?letter.pointer.as_ref().map(|p| &p.key), "gave up on a files record; it is in the dead letters");
                Ok(())
            }
            Err(RetryError::Stopped { .. }) => Err(Stop::LeaseLost),
            Err(RetryError::Failed { error, .. }) => Err(Stop::Lake(error)),
        }
    }

    fn letter(&self, pointer: Option<FilePointer>, raw: Option<&[u8]>, position: &RecordPosition) -> DeadLetter {
        DeadLetter {
            pointer,
            raw_base64: raw.map(RejectedRecord::encode_raw),
            kind: String::new(),
            error: String::new(),
            line: None,
            files_shard: self.shard_id.clone(),
            files_sequence: position.sequence.to_string(),
            attempts: 0,
            first_failure_ms: now_ms(),
            dead_lettered_ms: now_ms(),
        }
    }

    /// The file of `batch` that is missing from the bucket, if one is: a load failure
    /// the warehouse did not pin on a file (Redshift's COPY of a manifest with a missing
    /// entry) may still be that file's fault.
    async fn missing_file(&self, batch: &LoadBatch) -> Option<String> {
        // Owned values in the futures: borrowed ones make this future not `Send`.
        let files: Vec<(String, String)> = batch.files.iter().map(|f| (f.bucket.clone(), f.key.clone())).collect();
        let s3 = self.shared.lake.s3.clone();
        let mut heads = futures::stream::iter(files)
            .map(|(bucket, key)| {
                let s3 = s3.clone();
                async move {
                    let head = s3.head_object().bucket(&bucket).key(&key).send().await;
                    let missing =
                        head.as_ref().err().and_then(|e| e.as_service_error()).is_some_and(|e| {
                            matches!(e, aws_sdk_s3::operation::head_object::HeadObjectError::NotFound(_))
                        });
                    missing.then_some(key)
                }
            })
            .buffer_unordered(8);
        while let Some(found) = heads.next().await {
            if found.is_some() {
                return found;
            }
        }
        None
    }

    /// One attempt of `batch` (its manifest written first).
    async fn load_once(&mut self, batch: &LoadBatch, checkpointer: &Checkpointer) -> Result<Loaded, Stop> {
        let shared = self.shared.clone();
        let started = Instant::now();
        let manifest = Bytes::from(Manifest::for_files(&batch.files).to_json());
        let written = retry(&RetryPolicy::SHARD_OUTPUT, checkpointer.lease_lost_token(), || {
            shared.lake.put_json(&batch.manifest_key, manifest.clone())
        })
        .await;
        match written {
            Ok(()) => {}
            Err(RetryError::Stopped { .. }) => return Err(Stop::LeaseLost),
            Err(RetryError::Failed { error, .. }) => return Err(Stop::Lake(error)),
        }
        let error = match shared.warehouse.load(batch).await {
            Ok(report) => {
                let m = &shared.metrics;
                m.count(names::FILES_LOADED, report.files_loaded, &[]);
                m.count(names::FILES_SKIPPED, report.files_skipped, &[]);
                m.count(names::ROWS_STAGED, report.rows_staged, &[]);
                m.count(names::DUPLICATES_IN_BATCH, report.duplicates_in_batch, &[]);
                m.count(names::DUPLICATES_IN_TABLE, report.duplicates_in_table, &[]);
                m.count(names::ROWS_INSERTED, report.rows_inserted, &[]);
                m.timing(names::LOAD_LATENCY, started.elapsed(), &[]);
                tracing::info!(manifest = %batch.manifest_key, files = batch.files.len(), rows_inserted = report.rows_inserted,
                    duplicates_in_batch = report.duplicates_in_batch, duplicates_in_table = report.duplicates_in_table, "batch loaded");
                self.load.succeeded(Instant::now());
                return Ok(Loaded::Committed);
            }
            Err(error) => error,
        };
        shared
            .metrics
            .count(names::LOAD_FAILURES, 1, &[(KIND, error.kind().as_str())]);
        // The total too: the load-failure alarm watches one series, whatever the kind.
        shared.metrics.count(names::LOAD_FAILURES, 1, &[]);
        if error.kind() == ErrorKind::Fatal {
            tracing::error!(manifest = %batch.manifest_key, %error, "load failed for good");
            return Err(Stop::Warehouse(error));
        }
        let fault = match error.file() {
            Some(file) => Some((file.key.to_string(), file.line)),
            None => self.missing_file(batch).await.map(|key| (key, None)),
        };
        match fault {
            Some((key, line)) => {
                tracing::warn!(manifest = %batch.manifest_key, file = %key, ?line, %error, "the warehouse refused a batch file");
                let refusal = Refusal {
                    kind: error.kind().as_str().to_string(),
                    error: error.to_string(),
                    line,
                    attributed: true,
                };
                Ok(Loaded::Refused { key, refusal })
            }
            None => {
                tracing::warn!(manifest = %batch.manifest_key, %error, "load failed; nothing committed");
                Ok(Loaded::Failed(error))
            }
        }
    }

    /// After a load of several files failed naming none: each is loaded alone. Files
    /// that fail while another loads are held; `false` when none loaded (the warehouse,
    /// not a file, is failing: the load is retried whole).
    async fn split(&mut self, checkpointer: &Checkpointer) -> Result<bool, Stop> {
        let bucket = self.shared.lake.bucket.clone();
        let mut failed = Vec::new();
        let mut any_loaded = false;
        for pending in self.load.gathered() {
            let batch = LoadBatch {
                bucket: bucket.clone(),
                files: vec![pending.pointer.clone()],
                manifest_key: warehouse::manifest::manifest_key(
                    pending.position.sequence.as_str(),
                    pending.position.sequence.as_str(),
                ),
            };
            match self.load_once(&batch, checkpointer).await? {
                Loaded::Committed => {
                    any_loaded = true;
                    self.load.loaded_alone(&pending.pointer.key, Instant::now());
                }
                Loaded::Refused { key, refusal } => failed.push((key, refusal)),
                Loaded::Failed(error) => failed.push((
                    pending.pointer.key.clone(),
                    Refusal {
                        kind: error.kind().as_str().to_string(),
                        error: error.to_string(),
                        line: None,
                        attributed: false,
                    },
                )),
            }
        }
        let now = Instant::now();
        for (key, refusal) in failed {
            if any_loaded || refusal.attributed {
                self.load.hold(&key, refusal, now, retry_held_in(1));
            }
        }
        Ok(any_loaded)
    }

    /// Gives up on a held file: its pointer goes to the dead letters.
    async fn give_up(&mut self, held: Held, checkpointer: &Checkpointer) -> Result<(), Stop> {
        let first_failure_ms =
            now_ms() - i64::try_from(Instant::now().duration_since(held.since).as_millis()).unwrap_or(0);
        let letter = DeadLetter {
            kind: held.kind,
            error: held.error,
            line: held.line,
            attempts: held.attempts,
            first_failure_ms,
            ..self.letter(Some(held.file.pointer), None, &held.file.position)
        };
        self.dead_letter(letter, checkpointer).await
    }

    /// Tries the held files whose time has come, each alone.
    async fn retry_held(&mut self, checkpointer: &Checkpointer) -> Result<(), Stop> {
        let bucket = self.shared.lake.bucket.clone();
        for key in self.load.held_due(Instant::now()) {
            let Some(held) = self.load.held().iter().find(|h| h.file.pointer.key == key).cloned() else {
                continue;
            };
            let refusal = match self
                .load_once(&PendingLoad::held_batch(&held, &bucket), checkpointer)
                .await?
            {
                Loaded::Committed => {
                    self.load.release(&key);
                    tracing::info!(file = %key, attempts = held.attempts + 1, "a held batch file loaded");
                    continue;
                }
                Loaded::Refused { refusal, .. } => refusal,
                Loaded::Failed(error) => Refusal {
                    kind: error.kind().as_str().to_string(),
                    error: error.to_string(),
                    line: None,
                    attributed: false,
                },
            };
            let now = Instant::now();
            let retry_in = retry_held_in(held.attempts + 1);
            let window = self.shared.dead_letter_after;
            if let Some((held, given_up)) = self.load.refused_again(&key, refusal, now, retry_in, window)
                && given_up
            {
                self.load.release(&key);
                self.give_up(held, checkpointer).await?;
            }
        }
        Ok(())
    }

    /// Loads what is due: held files whose next try has come, then the gathered files
    /// (holding aside any the warehouse refuses); checkpoints once no file is held.
    async fn flush(&mut self, checkpointer: &mut Checkpointer) -> Result<(), Stop> {
        self.retry_held(checkpointer).await?;
        let bucket = self.shared.lake.bucket.clone();
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(60));
        while let Some(batch) = self.load.batch(&bucket) {
            match self.load_once(&batch, checkpointer).await? {
                Loaded::Committed => break,
                Loaded::Refused { key, refusal } => {
                    if !self.load.hold(&key, refusal, Instant::now(), retry_held_in(1)) {
                        // The warehouse named a file that is not in this load: nobody's input.
                        return Err(Stop::Misattributed {
                            manifest: batch.manifest_key,
                            key,
                        });
                    }
                    self.give_up_at_once(&key, checkpointer).await?;
                }
                Loaded::Failed(_) if batch.files.len() > 1 => {
                    if !self.split(checkpointer).await? {
                        self.pause(&mut backoff, checkpointer).await?;
                    }
                }
                Loaded::Failed(error) => {
                    // One file failing alone: held until another load shows whether it
                    // is the file or the warehouse.
                    let refusal = Refusal {
                        kind: error.kind().as_str().to_string(),
                        error: error.to_string(),
                        line: None,
                        attributed: false,
                    };
                    let key = batch.files[0].key.clone();
                    self.load.hold(&key, refusal, Instant::now(), retry_held_in(1));
                }
            }
        }
        self.load.committed();
        let Some(position) = self.load.checkpoint().cloned() else {
            return Ok(());
        };
        let checkpointed = retry(&RetryPolicy::SHARD_OUTPUT, checkpointer.lease_lost_token(), || {
            checkpointer.checkpoint(&position)
        })
        .await;
        match checkpointed {
            Ok(()) => {
                self.load.checkpointed();
                Ok(())
            }
            Err(
                RetryError::Stopped { .. }
                | RetryError::Failed {
                    error: CheckpointerError::LeaseLost(_),
                    ..
                },
            ) => Err(Stop::LeaseLost),
            Err(RetryError::Failed { error, .. }) => Err(Stop::Checkpoint(error)),
        }
    }

    /// With no retry window (`DEAD_LETTER_AFTER_SECS=0`), a file the warehouse named goes
    /// to the dead letters at its first refusal.
    async fn give_up_at_once(&mut self, key: &str, checkpointer: &Checkpointer) -> Result<(), Stop> {
        if self.shared.dead_letter_after.is_zero()
            && let Some(held) = self.load.release(key)
        {
            self.give_up(held, checkpointer).await?;
        }
        Ok(())
    }

    /// Flushes until no file is held (each loads or goes to the dead letters): a shard
    /// ends only once everything in it is settled.
    async fn settle(&mut self, checkpointer: &mut Checkpointer) -> Result<(), Stop> {
        loop {
            self.flush(checkpointer).await?;
            let Some(next) = self.load.held().iter().map(|h| h.next_try).min() else {
                return Ok(());
            };
            tokio::select! {
                () = tokio::time::sleep_until(next) => {}
                () = self.shared.shutdown.cancelled() => return Err(Stop::ShuttingDown),
                () = checkpointer.lease_lost_token().cancelled() => return Err(Stop::LeaseLost),
            }
        }
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
            if self.load.covers(&record.position) {
                continue;
            }
            let refused = match FilePointer::from_json(&record.data) {
                Ok(pointer) if pointer.bucket == self.shared.lake.bucket => Ok(pointer),
                Ok(pointer) => Err(format!(
                    "the pointer names bucket {}; this connector loads only from {}",
                    pointer.bucket, self.shared.lake.bucket
                )),
                Err(error) => Err(error.to_string()),
            };
            let pointer = match refused {
                Ok(pointer) => Some(pointer),
                Err(why) => {
                    // Never a pointer to the lake, never will be: kept, with its bytes,
                    // before the checkpoint can pass it.
                    self.shared.metrics.count(names::INVALID_POINTERS, 1, &[]);
                    let letter = DeadLetter {
                        kind: ErrorKind::Permanent.as_str().to_string(),
                        error: why,
                        attempts: 1,
                        ..self.letter(None, Some(&record.data), &record.position)
                    };
                    self.dead_letter(letter, checkpointer).await?;
                    None
                }
            };
            if self.load.add(&record.position, pointer, now) == Added::Duplicate {
                self.shared.metrics.count(names::DUPLICATE_POINTERS, 1, &[]);
                tracing::info!(sequence = %record.position, "pointer already pending; skipped");
            }
        }
        self.shared
            .metrics
            .sample(names::PENDING_FILES, self.load.files() as f64, Unit::Count, &[]);
        if self.load.is_due(&self.shared.limits, now) {
            self.flush(checkpointer).await?;
        }
        Ok(())
    }

    async fn idle(&mut self, checkpointer: &mut Checkpointer) -> Result<(), ProcessorError> {
        if self.load.is_due(&self.shared.limits, Instant::now()) {
            self.flush(checkpointer).await?;
        }
        Ok(())
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) -> Result<(), ProcessorError> {
        Ok(self.settle(checkpointer).await?)
    }

    async fn lease_lost(&mut self) {
        self.load.clear();
    }

    async fn shutdown_requested(&mut self, checkpointer: &mut Checkpointer) -> Result<(), ProcessorError> {
        // A load may still fit in the deadline; if not, the next owner repeats it.
        Ok(self.flush(checkpointer).await?)
    }
}
