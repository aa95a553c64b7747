//! `pipelinectl backfill`: the lake's events of a time range, loaded into the warehouse
//! again, when the pointer stream cannot bring them (it keeps 24 hours): a new or
//! rebuilt warehouse, a truncated `events` table, a lost `files` stream.
//!
//! The files are found from the key layout (one listing per hour folder of
//! `events/`, never a scan of the bucket) and loaded in bounded batches through the
//! warehouse's one exactly-once load, the redshift-connector's: `loaded_files` skips
//! what is loaded, the event-id dedupe drops what the table holds, and forgotten
//! players are dropped. Each batch commits on its own, so a killed backfill run again
//! goes on where it stopped, and a second run adds nothing.

use std::fmt::Write as _;
use std::ops::Range;
use std::time::{Duration, Instant};

use clap::Args;
use event_model::{BatchKind, FilePointer, hour_prefixes};
use pipeline_runtime::AwsError;
use pipeline_runtime::config::parse_resource_name;
use pipeline_runtime::retry::{RetryPolicy, retry};
use tokio_util::sync::CancellationToken;
use warehouse::{Dialect, LoadBatch, LoadReport, Warehouse, WarehouseArgs, WarehouseError};

use crate::aws::lake::{self, Listed};
use crate::progress::bar;
use crate::when::When;

/// `backfill`'s settings.
#[derive(Debug, Clone, Args)]
pub struct BackfillArgs {
    /// Start of the range (inclusive) of arrival times, which name the lake's hour
    /// folders: RFC 3339, `now`, or an age like 7d. Every file of an hour the range
    /// touches is loaded.
    #[arg(long, env = "BACKFILL_SINCE")]
    pub since: When,

    /// End of the range (exclusive): RFC 3339, `now`, or an age like 1h.
    #[arg(long, env = "BACKFILL_UNTIL", default_value = "now")]
    pub until: When,

    /// S3 bucket of the data lake (batch files are under `events/`).
    #[arg(long, env = "BUCKET", value_parser = parse_resource_name)]
    pub bucket: String,

    /// Most files one load (one warehouse transaction) takes.
    #[arg(long, env = "BACKFILL_BATCH_FILES", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=5000))]
    pub batch_files: u32,

    /// Most compressed MiB of files one load takes (a larger file is loaded alone).
    /// Default: 8 on PostgreSQL (about 100,000 rows, its fastest load in
    /// docs/performance.md), 512 on Redshift, where each load's fixed cost is seconds.
    #[arg(long, env = "BACKFILL_BATCH_MIB",
          value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub batch_mib: Option<u64>,

    /// Load again the files `loaded_files` lists as loaded before this time (RFC 3339,
    /// past): the time `events` was truncated or rebuilt, or any time after it (files
    /// loaded since then are loaded again and their rows dropped as duplicates; a time
    /// before it would skip files whose rows are gone). Files reloaded are recorded as
    /// loaded now, so a run interrupted and run again with the same time goes on where
    /// it stopped.
    #[arg(long, env = "BACKFILL_RELOAD_LOADED_BEFORE", value_parser = crate::when::past_instant)]
    pub reload_loaded_before: Option<When>,

    /// List the files and say what a run would load; load nothing.
    #[arg(long, env = "BACKFILL_DRY_RUN", default_value_t = false, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    pub dry_run: bool,

    /// Show a progress bar on standard error.
    #[arg(long, env = "BACKFILL_PROGRESS", default_value_t = true, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    pub progress: bool,

    #[command(flatten)]
    pub warehouse: WarehouseArgs,
}

/// Why a backfill stopped. What it committed before stays committed.
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error("BACKFILL_SINCE must be before BACKFILL_UNTIL")]
    EmptyRange,
    #[error("listing the lake: {}", .0.explain())]
    List(#[from] AwsError),
    #[error("{0} (what was loaded before stays loaded: run the same backfill again to go on)")]
    Warehouse(#[from] WarehouseError),
}

/// A file the warehouse could not load and the backfill set aside (it stays in the lake).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetAside {
    pub key: String,
    pub reason: String,
}

/// What a backfill found and did.
#[derive(Debug, Clone, Default)]
pub struct Backfilled {
    pub hours: usize,
    pub files: usize,
    pub bytes: u64,
    pub batches: usize,
    /// Files a load would skip (a dry run's count; a run's is in `report`).
    pub already_loaded: usize,
    pub report: LoadReport,
    pub set_aside: Vec<SetAside>,
    pub elapsed: Duration,
}

impl Backfilled {
    /// The closing lines.
    pub fn render(&self, dry_run: bool) -> String {
        let found = format!(
            "{} files ({:.1} MiB) in {} hour folders",
            self.files,
            self.bytes as f64 / 1_048_576.0,
            self.hours
        );
        if dry_run {
            return format!(
                "dry run: {found}; {} already loaded; would load {} in {} batches\n",
                self.already_loaded,
                self.files.saturating_sub(self.already_loaded),
                self.batches
            );
        }
        let r = &self.report;
        let secs = self.elapsed.as_secs_f64();
        let mut text = format!(
            "backfill: {found}; {} loaded, {} already loaded; {} rows staged, {} inserted, {} duplicates in the batches, \
             {} already in the table, {} of forgotten players dropped; {secs:.1} s, {:.0} rows/s\n",
            r.files_loaded,
            r.files_skipped,
            r.rows_staged,
            r.rows_inserted,
            r.duplicates_in_batch,
            r.duplicates_in_table,
            r.rows_forgotten,
            r.rows_staged as f64 / secs.max(1e-9),
        );
        for file in &self.set_aside {
            let _ = writeln!(
                text,
                "set aside (not loaded, still in the lake): {}: {}",
                file.key, file.reason
            );
        }
        text
    }
}

/// The batches of a load: consecutive runs of `files` of at most `max_files` files and
/// `max_bytes` bytes (a larger file alone).
pub fn batches(files: &[Listed], max_files: usize, max_bytes: u64) -> Vec<Range<usize>> {
    let mut batches = Vec::new();
    let (mut start, mut bytes) = (0, 0u64);
    for (index, file) in files.iter().enumerate() {
        let full = index - start >= max_files || (index > start && bytes + file.size_bytes > max_bytes);
        if full {
            batches.push(start..index);
            (start, bytes) = (index, 0);
        }
        bytes += file.size_bytes;
    }
    if start < files.len() {
        batches.push(start..files.len());
    }
    batches
}

/// `manifests/backfill/<first file>..<last file>.manifest`: the same batch gets the
/// same key when a run is repeated, and no connector's manifest has it.
pub fn manifest_key(first: &str, last: &str) -> String {
    let name = |key: &str| {
        key.trim_start_matches("events/")
            .trim_end_matches(".gzip")
            .replace('/', "-")
    };
    format!("manifests/backfill/{}..{}.manifest", name(first), name(last))
}

/// A lake file as a load takes it. What only a pointer knows (rows, sequence numbers,
/// event times) stays empty: a load counts rows itself.
fn pointer(bucket: &str, file: &Listed) -> FilePointer {
    FilePointer {
        bucket: bucket.to_string(),
        key: file.key.clone(),
        records: 0,
        bytes: file.size_bytes,
        shard: String::new(),
        first_sequence: String::new(),
        last_sequence: String::new(),
        min_event_timestamp: 0,
        max_event_timestamp: 0,
    }
}

/// Every batch file of `events/` in the range's hour folders, in key order.
async fn list_files(
    s3: &aws_sdk_s3::Client,
    args: &BackfillArgs,
    prefixes: &[String],
) -> Result<Vec<Listed>, BackfillError> {
    let never = CancellationToken::new();
    let listing = bar(
        args.progress,
        prefixes.len() as u64,
        "listing {bar:30} {pos}/{len} hours, {msg}",
    );
    let mut files = Vec::new();
    for prefix in prefixes {
        let listed = retry(&RetryPolicy::COMMAND, &never, || lake::list(s3, &args.bucket, prefix))
            .await
            .map_err(|e| e.into_error())?;
        files.extend(listed.into_iter().filter(|f| f.key.ends_with(".gzip")));
        listing.set_message(format!("{} files", files.len()));
        listing.inc(1);
    }
    listing.finish_and_clear();
    Ok(files)
}

/// Runs the backfill (or, with `dry_run`, says what it would do).
pub async fn run(
    s3: &aws_sdk_s3::Client,
    warehouse: &Warehouse,
    args: &BackfillArgs,
) -> Result<Backfilled, BackfillError> {
    let started = Instant::now();
    if args.since.0 >= args.until.0 {
        return Err(BackfillError::EmptyRange);
    }
    let prefixes = hour_prefixes(BatchKind::Events, args.since.0, args.until.0);
    let files = list_files(s3, args, &prefixes).await?;
    let batch_mib = args.batch_mib.unwrap_or(match warehouse.dialect() {
        Dialect::Postgres => 8,
        Dialect::Redshift => 512,
    });
    let planned = batches(&files, args.batch_files as usize, batch_mib.saturating_mul(1_048_576));
    let reload_before = args.reload_loaded_before.map(|w| w.0);
    let mut done = Backfilled {
        hours: prefixes.len(),
        files: files.len(),
        bytes: files.iter().map(|f| f.size_bytes).sum(),
        batches: planned.len(),
        ..Backfilled::default()
    };
    if args.dry_run {
        let keys: Vec<String> = files.iter().map(|f| f.key.clone()).collect();
        done.already_loaded = warehouse.loaded_files(&keys, reload_before).await?.len();
        done.elapsed = started.elapsed();
        return Ok(done);
    }
    let never = CancellationToken::new();
    let loading = bar(
        args.progress,
        done.bytes,
        "loading {bar:30} {bytes}/{total_bytes} {bytes_per_sec}, eta {eta}, {msg}",
    );
    for range in planned {
        let batch_files = &files[range];
        let mut chosen: Vec<&Listed> = batch_files.iter().collect();
        let batch_bytes: u64 = batch_files.iter().map(|f| f.size_bytes).sum();
        // A file that makes the load impossible is set aside and the rest loaded.
        while let Some((first, last)) = chosen.first().zip(chosen.last()) {
            let batch = LoadBatch {
                bucket: args.bucket.clone(),
                files: chosen.iter().map(|f| pointer(&args.bucket, f)).collect(),
                manifest_key: manifest_key(&first.key, &last.key),
                reload_loaded_before: reload_before,
            };
            match retry(&RetryPolicy::COMMAND, &never, || warehouse.load(&batch)).await {
                Ok(report) => {
                    done.report.add(&report);
                    break;
                }
                Err(error) => {
                    let error = error.into_error();
                    let Some(fault) = error.file() else {
                        loading.abandon();
                        return Err(error.into());
                    };
                    let key = fault.key.to_string();
                    done.set_aside.push(SetAside {
                        key: key.clone(),
                        reason: error.to_string(),
                    });
                    chosen.retain(|f| f.key != key);
                }
            }
        }
        loading.inc(batch_bytes);
        loading.set_message(format!("{} rows inserted", done.report.rows_inserted));
    }
    loading.finish_and_clear();
    done.elapsed = started.elapsed();
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(sizes: &[u64]) -> Vec<Listed> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, size)| Listed {
                key: format!("events/2026/01/01/00/{i}-{i}.gzip"),
                size_bytes: *size,
            })
            .collect()
    }

    #[test]
    fn batches_are_bounded_by_files_and_bytes_and_cover_every_file_once() {
        assert_eq!(batches(&listed(&[1; 5]), 2, 100), [0..2, 2..4, 4..5]);
        assert_eq!(batches(&listed(&[40, 40, 40, 10]), 10, 100), [0..2, 2..4]);
        // A file larger than the bound goes alone, and never makes an empty batch.
        assert_eq!(batches(&listed(&[500, 1, 500]), 10, 100), [0..1, 1..2, 2..3]);
        assert!(batches(&[], 10, 100).is_empty());
        let many = listed(&[3; 1000]);
        let planned = batches(&many, 7, 20);
        let covered: Vec<usize> = planned.iter().flat_map(|r| r.clone()).collect();
        assert_eq!(covered, (0..1000).collect::<Vec<_>>());
        assert!(planned.iter().all(|r| r.len() <= 6), "six files of 3 bytes fit 20");
    }

    #[test]
    fn a_batch_manifest_is_named_after_its_files_apart_from_the_connectors() {
        assert_eq!(
            manifest_key("events/2026/01/01/00/1-5.gzip", "events/2026/01/01/02/9-12.gzip"),
            "manifests/backfill/2026-01-01-00-1-5..2026-01-01-02-9-12.manifest"
        );
    }
}
