//! `pipelinectl dead-letters`: the `files` records the redshift-connector gave up on
//! (under `dead-letters/` in the bucket), listed, and redriven once the cause is fixed.
//!
//! A redrive publishes each pointer on the `files` stream again, then deletes its dead
//! letter. The warehouse's `loaded_files` and the event-id dedupe keep it exactly once:
//! a redriven file that was loaded meanwhile adds nothing, and a file that still cannot
//! load comes back to the dead letters after the retry window.

use std::io::Write;

use clap::{Args, Subcommand};
use event_model::{DEAD_LETTER_PREFIX, DeadLetter};
use pipeline_runtime::AwsError;
use pipeline_runtime::config::parse_resource_name;
use pipeline_runtime::retry::{RetryPolicy, retry};
use tokio_util::sync::CancellationToken;

use crate::aws::{lake, streams};

/// `pipelinectl dead-letters …`
#[derive(Debug, Args)]
pub struct DeadLettersArgs {
    #[command(subcommand)]
    pub action: Action,

    /// S3 bucket of the data lake (dead letters are under `dead-letters/`).
    #[arg(long, env = "BUCKET", value_parser = parse_resource_name, global = true)]
    pub bucket: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Action {
    /// Show every dead letter: the file, why, when, and how often it was tried.
    List {
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Publish the dead-lettered pointers on the files stream again and delete their
    /// dead letters (records that were no pointer are left for a person to read).
    Redrive {
        /// Kinesis stream the redshift-connector reads pointers from.
        #[arg(long, env = "FILES_STREAM", default_value = "files", value_parser = parse_resource_name)]
        files_stream: String,
        /// Only the dead letter with this key (as `list` shows it); default: all.
        #[arg(long)]
        key: Option<String>,
        /// Say what would be redriven, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Why the command failed.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error("no bucket: set BUCKET or --bucket")]
    NoBucket,
    #[error("{}", .0.explain())]
    Aws(#[from] AwsError),
    #[error("dead letter {key} cannot be read: {reason}")]
    Unreadable { key: String, reason: String },
    #[error("no dead letter {0}")]
    NotFound(String),
}

/// A dead letter and its key.
#[derive(Debug, Clone)]
pub struct Stored {
    pub key: String,
    pub letter: DeadLetter,
}

/// Every dead letter in `bucket`, oldest first.
pub async fn list(s3: &aws_sdk_s3::Client, bucket: &str) -> Result<Vec<Stored>, DeadLetterError> {
    let keys = lake::list(s3, bucket, DEAD_LETTER_PREFIX).await?;
    let mut stored = Vec::with_capacity(keys.len());
    for lake::Listed { key, .. } in keys {
        let body = lake::get(s3, bucket, &key).await?;
        let letter = DeadLetter::from_json(&body).map_err(|e| DeadLetterError::Unreadable {
            key: key.clone(),
            reason: e.to_string(),
        })?;
        stored.push(Stored { key, letter });
    }
    stored.sort_by_key(|s| s.letter.dead_lettered_ms);
    Ok(stored)
}

fn when(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%SZ").to_string())
        .unwrap_or_else(|_| ms.to_string())
}

/// The table `list` prints.
pub fn render(stored: &[Stored]) -> String {
    if stored.is_empty() {
        return "no dead letters\n".to_string();
    }
    let mut out = String::new();
    for Stored { key, letter } in stored {
        let file = letter
            .pointer
            .as_ref()
            .map(|p| format!("s3://{}/{}", p.bucket, p.key))
            .unwrap_or_else(|| "(not a pointer)".to_string());
        let line = letter.line.map(|l| format!(" line {l}")).unwrap_or_default();
        out.push_str(&format!(
            "{key}\n  file:   {file}{line}\n  why:    {} ({})\n  since:  {}, {} attempts, dead-lettered {}\n",
            letter.error,
            letter.kind,
            when(letter.first_failure_ms),
            letter.attempts,
            when(letter.dead_lettered_ms)
        ));
    }
    out.push_str(&format!("{} dead letter(s)\n", stored.len()));
    out
}

/// Runs the command; returns how many dead letters it showed or redrove.
pub async fn run(
    s3: &aws_sdk_s3::Client,
    kinesis: &aws_sdk_kinesis::Client,
    args: &DeadLettersArgs,
) -> Result<usize, DeadLetterError> {
    let bucket = args.bucket.as_deref().ok_or(DeadLetterError::NoBucket)?;
    let stored = list(s3, bucket).await?;
    let mut stdout = std::io::stdout().lock();
    match &args.action {
        Action::List { json } => {
            let text = if *json {
                stored
                    .iter()
                    .map(|s| format!("{}\n", serde_json::json!({"key": s.key, "dead_letter": s.letter})))
                    .collect()
            } else {
                render(&stored)
            };
            let _ = stdout.write_all(text.as_bytes());
            Ok(stored.len())
        }
        Action::Redrive {
            files_stream,
            key,
            dry_run,
        } => {
            let chosen: Vec<&Stored> = stored
                .iter()
                .filter(|s| key.as_ref().is_none_or(|k| *k == s.key))
                .collect();
            if let Some(key) = key
                && chosen.is_empty()
            {
                return Err(DeadLetterError::NotFound(key.clone()));
            }
            let never = CancellationToken::new();
            let mut redriven = 0;
            for Stored { key, letter } in chosen {
                let Some(pointer) = &letter.pointer else {
                    let _ = writeln!(stdout, "skipped {key}: not a pointer (read it with `list`)");
                    continue;
                };
                if *dry_run {
                    let _ = writeln!(stdout, "would redrive {key}: s3://{}/{}", pointer.bucket, pointer.key);
                    redriven += 1;
                    continue;
                }
                let data = pointer.to_json();
                retry(&RetryPolicy::COMMAND, &never, || {
                    streams::put_record(kinesis, files_stream, &pointer.shard, &data)
                })
                .await
                .map_err(|e| e.into_error())?;
                // Deleted only once the pointer is on the stream: a crash in between
                // redrives it twice, which loaded_files makes harmless.
                retry(&RetryPolicy::COMMAND, &never, || lake::delete(s3, bucket, key))
                    .await
                    .map_err(|e| e.into_error())?;
                let _ = writeln!(stdout, "redriven {key}: s3://{}/{}", pointer.bucket, pointer.key);
                redriven += 1;
            }
            let _ = writeln!(
                stdout,
                "{redriven} pointer(s) {}",
                if *dry_run { "would be redriven" } else { "redriven" }
            );
            Ok(redriven)
        }
    }
}
