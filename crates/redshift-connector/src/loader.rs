//! The redshift-connector's output: per `files` shard, a load of the gathered pointers
//! in one warehouse transaction (the buffered processor checkpoints after it; nothing
//! is checkpointed before the load committed).
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

use std::time::Duration;

use bytes::Bytes;
use event_model::{DeadLetter, FilePointer, RejectedRecord};
use pipeline_runtime::clock::now_ms;
use pipeline_runtime::error::{Classified, ErrorKind};
use pipeline_runtime::metrics::names::{self, dimension::KIND};
use pipeline_runtime::{Metrics, Unit};
use shard_consumer::RecordPosition;
use shard_consumer::backoff::Backoff;
use shard_consumer::buffered::{FlushError, Flushing, Output};
use tokio::time::Instant;
use warehouse::manifest::Manifest;
use warehouse::{LoadBatch, WarehouseError};

use crate::pending::{Gathered, Held, Load, Refusal};
use crate::sink::Sink;

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

/// A load that cannot go on, whatever the input: the service stops with it.
#[derive(Debug, thiserror::Error)]
enum LoadError {
    #[error("the load cannot succeed: {0}")]
    Warehouse(WarehouseError),
    #[error("the load of {manifest} was refused for {key}, which it does not hold")]
    Misattributed { manifest: String, key: String },
}

/// A refusal of a file the warehouse did not name (it failed alone, or in a split).
fn unexplained(error: &WarehouseError) -> Refusal {
    Refusal {
        kind: error.kind().as_str().to_string(),
        error: error.to_string(),
        line: None,
        attributed: false,
    }
}

/// Loads every shard's pointers.
pub struct Loader {
    pub sink: Sink,
    /// How long a file the warehouse keeps refusing is retried before it is dead-lettered.
    pub dead_letter_after: Duration,
    pub metrics: Metrics,
}

impl Output<Load, Gathered> for Loader {
    async fn added(&self, gathered: Gathered, flushing: &Flushing<'_>) -> Result<(), FlushError> {
        for not_pointer in gathered.not_pointers {
            // Never a pointer to the lake, never will be: kept, with its bytes, before
            // the checkpoint can pass it.
            self.metrics.count(names::INVALID_POINTERS, 1, &[]);
            let letter = DeadLetter {
                kind: ErrorKind::Permanent.as_str().to_string(),
                error: not_pointer.why,
                attempts: 1,
                ..letter(None, Some(&not_pointer.raw), &not_pointer.position, flushing)
            };
            self.dead_letter(letter, flushing).await?;
        }
        for sequence in gathered.duplicates {
            self.metrics.count(names::DUPLICATE_POINTERS, 1, &[]);
            tracing::info!(%sequence, "pointer already pending; skipped");
        }
        self.metrics
            .sample(names::PENDING_FILES, gathered.files as f64, Unit::Count, &[]);
        Ok(())
    }

    /// Loads what is due: held files whose next try has come, then the gathered files
    /// (holding aside any the warehouse refuses).
    async fn write(&self, load: &mut Load, flushing: &Flushing<'_>) -> Result<(), FlushError> {
        self.retry_held(load, flushing).await?;
        let bucket = self.sink.bucket();
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(60));
        while let Some(batch) = load.batch(bucket) {
            match self.load_once(load, &batch, flushing).await? {
                Loaded::Committed => break,
                Loaded::Refused { key, refusal } => {
                    if !load.hold(&key, refusal, Instant::now(), retry_held_in(1)) {
                        // The warehouse named a file that is not in this load: nobody's input.
                        return Err(FlushError::fatal(LoadError::Misattributed {
                            manifest: batch.manifest_key,
                            key,
                        }));
                    }
                    self.give_up_at_once(load, &key, flushing).await?;
                }
                Loaded::Failed(_) if batch.files.len() > 1 => {
                    if !self.split(load, flushing).await? {
                        flushing.pause(backoff.next_delay()).await?;
                    }
                }
                Loaded::Failed(error) => {
                    // One file failing alone: held until another load shows whether it
                    // is the file or the warehouse.
                    let key = batch.files[0].key.clone();
                    load.hold(&key, unexplained(&error), Instant::now(), retry_held_in(1));
                }
            }
        }
        Ok(())
    }
}

/// A dead letter of the `files` record at `position`, its cause still to fill in.
fn letter(
    pointer: Option<FilePointer>,
    raw: Option<&[u8]>,
    position: &RecordPosition,
    flushing: &Flushing<'_>,
) -> DeadLetter {
    DeadLetter {
        pointer,
        raw_base64: raw.map(RejectedRecord::encode_raw),
        kind: String::new(),
        error: String::new(),
        line: None,
        files_shard: flushing.shard_id().to_string(),
        files_sequence: position.sequence.to_string(),
        attempts: 0,
        first_failure_ms: now_ms(),
        dead_lettered_ms: now_ms(),
    }
}

impl Loader {
    /// Writes a dead letter (retried like any output the shard cannot skip).
    async fn dead_letter(&self, letter: DeadLetter, flushing: &Flushing<'_>) -> Result<(), FlushError> {
        let key = letter.key();
        let body = Bytes::from(letter.to_json());
        flushing
            .retry("dead letter put", || self.sink.put_dead_letter(&key, body.clone()))
            .await?;
        self.metrics.count(names::DEAD_LETTER_POINTERS, 1, &[]);
        tracing::error!(%key, kind = %letter.kind, error = %letter.error, line = ?letter.line,
            file = ?letter.pointer.as_ref().map(|p| &p.key), "gave up on a files record; it is in the dead letters");
        Ok(())
    }

    /// One attempt of `batch` (its manifest written first).
    async fn load_once(
        &self,
        load: &mut Load,
        batch: &LoadBatch,
        flushing: &Flushing<'_>,
    ) -> Result<Loaded, FlushError> {
        let started = Instant::now();
        let manifest = Bytes::from(Manifest::for_files(&batch.files).to_json());
        flushing
            .retry("manifest put", || {
                self.sink.put_manifest(&batch.manifest_key, manifest.clone())
            })
            .await?;
        let error = match self.sink.load(batch).await {
            Ok(report) => {
                let m = &self.metrics;
                m.count(names::FILES_LOADED, report.files_loaded, &[]);
                m.count(names::FILES_SKIPPED, report.files_skipped, &[]);
                m.count(names::ROWS_STAGED, report.rows_staged, &[]);
                m.count(names::DUPLICATES_IN_BATCH, report.duplicates_in_batch, &[]);
                m.count(names::DUPLICATES_IN_TABLE, report.duplicates_in_table, &[]);
                m.count(names::ROWS_FORGOTTEN, report.rows_forgotten, &[]);
                m.count(names::ROWS_INSERTED, report.rows_inserted, &[]);
                m.timing(names::LOAD_LATENCY, started.elapsed(), &[]);
                tracing::info!(manifest = %batch.manifest_key, files = batch.files.len(), rows_inserted = report.rows_inserted,
                    duplicates_in_batch = report.duplicates_in_batch, duplicates_in_table = report.duplicates_in_table, rows_forgotten = report.rows_forgotten, "batch loaded");
                load.succeeded(Instant::now());
                return Ok(Loaded::Committed);
            }
            Err(error) => error,
        };
        self.metrics
            .count(names::LOAD_FAILURES, 1, &[(KIND, error.kind().as_str())]);
        // The total too: the load-failure alarm watches one series, whatever the kind.
        self.metrics.count(names::LOAD_FAILURES, 1, &[]);
        if error.kind() == ErrorKind::Fatal {
            tracing::error!(manifest = %batch.manifest_key, %error, "load failed for good");
            return Err(FlushError::fatal(LoadError::Warehouse(error)));
        }
        let fault = match error.file() {
            Some(file) => Some((file.key.to_string(), file.line)),
            None => self.sink.missing_file(batch).await.map(|key| (key, None)),
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
    async fn split(&self, load: &mut Load, flushing: &Flushing<'_>) -> Result<bool, FlushError> {
        let mut failed = Vec::new();
        let mut any_loaded = false;
        for pending in load.gathered() {
            let batch = Load::alone(&pending, self.sink.bucket());
            match self.load_once(load, &batch, flushing).await? {
                Loaded::Committed => {
                    any_loaded = true;
                    load.loaded_alone(&pending.pointer.key, Instant::now());
                }
                Loaded::Refused { key, refusal } => failed.push((key, refusal)),
                Loaded::Failed(error) => failed.push((pending.pointer.key.clone(), unexplained(&error))),
            }
        }
        let now = Instant::now();
        for (key, refusal) in failed {
            if any_loaded || refusal.attributed {
                load.hold(&key, refusal, now, retry_held_in(1));
            }
        }
        Ok(any_loaded)
    }

    /// Gives up on a held file: its pointer goes to the dead letters.
    async fn give_up(&self, held: Held, flushing: &Flushing<'_>) -> Result<(), FlushError> {
        let first_failure_ms =
            now_ms() - i64::try_from(Instant::now().duration_since(held.since).as_millis()).unwrap_or(0);
        let letter = DeadLetter {
            kind: held.kind,
            error: held.error,
            line: held.line,
            attempts: held.attempts,
            first_failure_ms,
            ..letter(Some(held.file.pointer), None, &held.file.position, flushing)
        };
        self.dead_letter(letter, flushing).await
    }

    /// Tries the held files whose time has come, each alone.
    async fn retry_held(&self, load: &mut Load, flushing: &Flushing<'_>) -> Result<(), FlushError> {
        for key in load.held_due(Instant::now()) {
            let Some(held) = load.held().iter().find(|h| h.file.pointer.key == key).cloned() else {
                continue;
            };
            let batch = Load::alone(&held.file, self.sink.bucket());
            let refusal = match self.load_once(load, &batch, flushing).await? {
                Loaded::Committed => {
                    load.release(&key);
                    tracing::info!(file = %key, attempts = held.attempts + 1, "a held batch file loaded");
                    continue;
                }
                Loaded::Refused { refusal, .. } => refusal,
                Loaded::Failed(error) => unexplained(&error),
            };
            let now = Instant::now();
            let retry_in = retry_held_in(held.attempts + 1);
            if let Some((held, given_up)) = load.refused_again(&key, refusal, now, retry_in, self.dead_letter_after)
                && given_up
            {
                // Released only once its dead letter is written: until then it holds the
                // checkpoint back.
                self.give_up(held, flushing).await?;
                load.release(&key);
            }
        }
        Ok(())
    }

    /// With no retry window (`DEAD_LETTER_AFTER_SECS=0`), a file the warehouse named goes
    /// to the dead letters at its first refusal.
    async fn give_up_at_once(&self, load: &mut Load, key: &str, flushing: &Flushing<'_>) -> Result<(), FlushError> {
        if self.dead_letter_after.is_zero()
            && let Some(held) = load.held().iter().find(|h| h.file.pointer.key == key).cloned()
        {
            self.give_up(held, flushing).await?;
            load.release(key);
        }
        Ok(())
    }
}
