//! `pipelinectl forget`: erases players on request (GDPR art. 17, CCPA, COPPA) from the
//! three stores that hold them, and writes a receipt.
//!
//! 1. **Warehouse** first: each id goes into `forgotten_clients` and their events are
//!    deleted, in one transaction that loads wait for. From then on every load (the
//!    connector's, a replayed pointer's, a backfill's) drops their rows, so nothing
//!    that runs later brings them back.
//! 2. **PlayerState**: their item is deleted; the level stage counts them out of their
//!    level as for a prune.
//! 3. **Lake**: every batch file under `events/` and `errors/` in the hour folders of
//!    the range (`--since`, `--until`: arrival times, a bounded listing) is read, and
//!    one holding their lines is written again without them under the same key. S3
//!    replaces an object whole, so a reader (or a crash) sees the old object or the
//!    new one, never a part, and no other player's line is ever lost. In a versioned
//!    bucket every older version of the folder's objects that holds their lines is
//!    deleted after the new ones are written (including what an interrupted run left).
//! 4. **Receipt**: JSON under `receipts/` saying what was removed from where, printed.
//!
//! Running it again with the same ids is safe: everything it does is idempotent.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::PathBuf;

use bytes::Bytes;
use clap::Args;
use event_model::{BatchKind, RejectedRecord, hour_prefixes};
use pipeline_runtime::config::parse_resource_name;
use pipeline_runtime::retry::{RetryPolicy, retry};
use pipeline_runtime::s3::Lake;
use pipeline_runtime::{AwsClients, AwsError};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use warehouse::{Warehouse, WarehouseArgs, WarehouseError, is_client_id};

use crate::aws::{lake, player_state};
use crate::when::When;

/// `forget`'s settings.
#[derive(Debug, Clone, Args)]
pub struct ForgetArgs {
    /// Client ids (hyphenated UUIDs) of the players to erase, comma-separated.
    #[arg(long = "client-id", env = "FORGET_CLIENT_IDS", value_delimiter = ',')]
    pub client_ids: Vec<String>,

    /// A file of client ids to erase, one per line (blank lines and `#` comments skipped).
    #[arg(long, env = "FORGET_CLIENT_IDS_FILE")]
    pub client_ids_file: Option<PathBuf>,

    /// Start of the arrival times whose lake files are searched (inclusive): RFC 3339,
    /// `now`, or an age like 400d. The lake keeps every file by the hour it arrived:
    /// use the player's first event (or the lake's retention).
    #[arg(long, env = "FORGET_SINCE")]
    pub since: When,

    /// End of the arrival times searched (exclusive).
    #[arg(long, env = "FORGET_UNTIL", default_value = "now")]
    pub until: When,

    /// S3 bucket of the data lake.
    #[arg(long, env = "BUCKET", value_parser = parse_resource_name)]
    pub bucket: String,

    /// KMS key the lake's objects are encrypted with (SSE-KMS), as the connectors write them.
    #[arg(long, env = "SSE_KMS_KEY_ID")]
    pub sse_kms_key_id: Option<String>,

    /// DynamoDB table with each present player's level.
    #[arg(long, env = "PLAYER_STATE_TABLE", default_value = "PlayerState", value_parser = parse_resource_name)]
    pub player_state_table: String,

    /// Say what would be removed (reading everything), change nothing, write no receipt.
    #[arg(long, env = "FORGET_DRY_RUN", default_value_t = false, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    pub dry_run: bool,

    /// Show a progress bar on standard error while the lake is searched.
    #[arg(long, env = "FORGET_PROGRESS", default_value_t = true, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    pub progress: bool,

    #[command(flatten)]
    pub warehouse: WarehouseArgs,
}

/// Why `forget` stopped. What it removed before stays removed; run it again with the
/// same ids to finish (every step is idempotent).
#[derive(Debug, thiserror::Error)]
pub enum ForgetError {
    #[error("FORGET_CLIENT_IDS: {0}")]
    Ids(String),
    #[error("FORGET_CLIENT_IDS_FILE {path}: {error}")]
    IdsFile { path: PathBuf, error: std::io::Error },
    #[error("FORGET_SINCE must be before FORGET_UNTIL")]
    EmptyRange,
    #[error("warehouse: {0}{RESUME}")]
    Warehouse(#[from] WarehouseError),
    #[error("{}{RESUME}", .0.explain())]
    Aws(#[from] AwsError),
    #[error("s3://{bucket}/{key}: {reason}{RESUME}")]
    Object {
        bucket: String,
        key: String,
        reason: String,
    },
    #[error("the receipt: {0}{RESUME}")]
    Receipt(String),
}

const RESUME: &str = " (what was erased before this stays erased: run the same forget again to finish)";

/// A lake object written again without the players' lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rewritten {
    pub key: String,
    pub lines_removed: u64,
    pub lines_kept: u64,
}

/// What `forget` removed, where and when: the receipt.
#[derive(Debug, Clone, Serialize)]
pub struct Receipt {
    pub command: &'static str,
    pub dry_run: bool,
    pub started_at: String,
    pub finished_at: String,
    pub client_ids: Vec<String>,
    pub warehouse: WarehouseReceipt,
    pub player_state: PlayerStateReceipt,
    pub lake: LakeReceipt,
    /// Where the receipt is stored (`s3://bucket/receipts/…`); none on a dry run.
    pub receipt: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct WarehouseReceipt {
    /// Rows deleted from `events` (on a dry run: that would be).
    pub events_deleted: u64,
    /// Each id is in `forgotten_clients`, which every later load consults.
    pub tombstoned: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlayerStateReceipt {
    pub table: String,
    pub items_deleted: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct LakeReceipt {
    pub bucket: String,
    pub since: String,
    pub until: String,
    pub objects_searched: u64,
    pub lines_removed: u64,
    pub objects_rewritten: Vec<Rewritten>,
    /// Versions an object had before (a versioned bucket) that held the players'
    /// lines, deleted for good: `key?versionId=…`.
    pub old_versions_deleted: Vec<String>,
    /// Objects (or versions) that are not gzip and could not be searched line by line:
    /// left as they are, for a person to look at; the command exits 1.
    pub unreadable: Vec<Unreadable>,
}

/// A lake object `forget` could not read as a batch file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unreadable {
    pub key: String,
    pub reason: String,
    /// Whether one of the ids is in its raw bytes.
    pub mentions_them: bool,
}

impl Unreadable {
    fn of(key: &str, body: &[u8], reason: String, ids: &BTreeSet<String>) -> Self {
        Unreadable {
            key: key.to_string(),
            reason,
            mentions_them: uuids_in(body).any(|id| ids.contains(&id)),
        }
    }
}

/// The ids to erase: the flag's and the file's, trimmed, lower-cased (as the pipeline
/// stores them), each a client id, without repeats, in order.
pub fn client_ids(args: &ForgetArgs) -> Result<Vec<String>, ForgetError> {
    let mut listed: Vec<String> = args.client_ids.clone();
    if let Some(path) = &args.client_ids_file {
        let text = std::fs::read_to_string(path).map_err(|error| ForgetError::IdsFile {
            path: path.clone(),
            error,
        })?;
        listed.extend(text.lines().map(str::to_string));
    }
    normalized_ids(&listed)
}

/// `listed` trimmed, lower-cased, without blanks, comments and repeats, each checked.
fn normalized_ids(listed: &[String]) -> Result<Vec<String>, ForgetError> {
    let mut ids = Vec::new();
    for raw in listed {
        let id = raw.trim().to_ascii_lowercase();
        if id.is_empty() || id.starts_with('#') {
            continue;
        }
        if !is_client_id(&id) {
            return Err(ForgetError::Ids(format!(
                "{raw:?} is not a client id (a hyphenated UUID)"
            )));
        }
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    if ids.is_empty() {
        return Err(ForgetError::Ids(
            "no client id given (or FORGET_CLIENT_IDS_FILE)".into(),
        ));
    }
    Ok(ids)
}

/// Every hyphenated UUID in `bytes`, lower-cased.
fn uuids_in(bytes: &[u8]) -> impl Iterator<Item = String> + '_ {
    bytes.windows(36).filter_map(|window| {
        let shaped = window.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        });
        shaped.then(|| String::from_utf8_lossy(window).to_ascii_lowercase())
    })
}

/// Whether a line of a batch file of `kind` is about one of `ids`: an event line by
/// its `client_id`; a rejected record by any of the ids anywhere in its raw bytes or
/// its detail (a rejected record may be any bytes at all, so no field can be trusted).
pub fn is_about(kind: BatchKind, line: &[u8], ids: &BTreeSet<String>) -> bool {
    let mentions = |bytes: &[u8]| uuids_in(bytes).any(|id| ids.contains(&id));
    match kind {
        BatchKind::Events => match serde_json::from_slice::<serde_json::Value>(line) {
            Ok(event) => event["client_id"]
                .as_str()
                .is_some_and(|id| ids.contains(&id.to_ascii_lowercase())),
            Err(_) => mentions(line),
        },
        BatchKind::Errors => match serde_json::from_slice::<RejectedRecord>(line) {
            Ok(record) => {
                record.raw().is_ok_and(|raw| mentions(&raw))
                    || mentions(record.detail.as_bytes())
                    || mentions(record.raw_base64.as_bytes())
            }
            Err(_) => mentions(line),
        },
    }
}

/// The lines of a gunzipped batch file of `kind` that are not about `ids`, and how many
/// were and were not; `None` when no line is about them (the file stays as it is).
pub fn without(kind: BatchKind, text: &[u8], ids: &BTreeSet<String>) -> Option<(Vec<u8>, u64, u64)> {
    let (mut kept, mut removed, mut lines_kept) = (Vec::with_capacity(text.len()), 0u64, 0u64);
    for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        if is_about(kind, line, ids) {
            removed += 1;
        } else {
            kept.extend_from_slice(line);
            kept.push(b'\n');
            lines_kept += 1;
        }
    }
    (removed > 0).then_some((kept, removed, lines_kept))
}

/// The most a batch file may hold gunzipped: far above what the connectors write, and
/// a bound on what one object can make this process hold.
const MAX_TEXT_BYTES: u64 = 1 << 30;

fn gunzip(body: &[u8]) -> Result<Vec<u8>, String> {
    let mut text = Vec::new();
    flate2::read::MultiGzDecoder::new(body)
        .take(MAX_TEXT_BYTES + 1)
        .read_to_end(&mut text)
        .map_err(|e| format!("not gzip: {e}"))?;
    if text.len() as u64 > MAX_TEXT_BYTES {
        return Err(format!("more than {MAX_TEXT_BYTES} bytes gunzipped"));
    }
    Ok(text)
}

fn gzip(text: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::with_capacity(text.len() / 4), flate2::Compression::new(6));
    encoder.write_all(text)?;
    encoder.finish()
}

fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map_or_else(|_| ms.to_string(), |t| t.to_string())
}

/// Rewrites of one object that lost a race with another writer before giving up.
const MAX_REWRITE_ATTEMPTS: u32 = 5;

/// What searching one object found and did.
enum Searched {
    Clean,
    Rewritten(Rewritten),
    Unreadable(Unreadable),
}

/// The lake as `forget` works on it.
struct LakeEraser<'a> {
    s3: aws_sdk_s3::Client,
    writer: Lake,
    ids: &'a BTreeSet<String>,
    dry_run: bool,
    never: CancellationToken,
}

impl LakeEraser<'_> {
    async fn call<T, F, Fut>(&self, call: F) -> Result<T, AwsError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, AwsError>>,
    {
        retry(&RetryPolicy::COMMAND, &self.never, call)
            .await
            .map_err(|e| e.into_error())
    }

    /// Reads the current object at `key` and, when it holds the players' lines, writes
    /// it again without them, on condition that it is still what was read (S3's
    /// If-Match): another writer in between (a second `forget`) makes it read again,
    /// so neither undoes the other.
    async fn search_object(&self, kind: BatchKind, key: &str) -> Result<Searched, ForgetError> {
        let bucket = &self.writer.bucket;
        for _ in 0..MAX_REWRITE_ATTEMPTS {
            let (body, etag) = self.call(|| lake::get_current(&self.s3, bucket, key)).await?;
            let text = match gunzip(&body) {
                Ok(text) => text,
                Err(reason) => return Ok(Searched::Unreadable(Unreadable::of(key, &body, reason, self.ids))),
            };
            let Some((kept, lines_removed, lines_kept)) = without(kind, &text, self.ids) else {
                return Ok(Searched::Clean);
            };
            let rewritten = Rewritten {
                key: key.to_string(),
                lines_removed,
                lines_kept,
            };
            if self.dry_run {
                return Ok(Searched::Rewritten(rewritten));
            }
            let new_body = Bytes::from(gzip(&kept).map_err(|e| ForgetError::Object {
                bucket: bucket.clone(),
                key: key.to_string(),
                reason: e.to_string(),
            })?);
            let written = self
                .call(|| {
                    self.writer
                        .replace_gzip_json_lines(key, new_body.clone(), etag.as_deref())
                })
                .await;
            match written {
                Ok(_) => return Ok(Searched::Rewritten(rewritten)),
                // 412: changed since read; 409: a concurrent conditional write.
                Err(error) if matches!(error.status, Some(412 | 409)) => continue,
                Err(error) => return Err(error.into()),
            }
        }
        Err(ForgetError::Object {
            bucket: bucket.clone(),
            key: key.to_string(),
            reason: format!("changed by another writer {MAX_REWRITE_ATTEMPTS} times while being rewritten"),
        })
    }

    /// Deletes every older version under `prefix` (a versioned bucket) that holds the
    /// players' lines: the ones the rewrites replaced, and any a run interrupted
    /// between a rewrite and this left. Returns them, and the versions it could not read.
    async fn sweep_old_versions(
        &self,
        kind: BatchKind,
        prefix: &str,
    ) -> Result<(Vec<String>, Vec<Unreadable>), ForgetError> {
        let bucket = &self.writer.bucket;
        let (mut deleted, mut unreadable) = (Vec::new(), Vec::new());
        let old = self.call(|| lake::old_versions(&self.s3, bucket, prefix)).await?;
        for version in old.iter().filter(|v| v.key.ends_with(".gzip")) {
            let name = format!("{}?versionId={}", version.key, version.version_id);
            let body = self
                .call(|| lake::get_version(&self.s3, bucket, &version.key, &version.version_id))
                .await?;
            match gunzip(&body) {
                Ok(text) if without(kind, &text, self.ids).is_none() => continue,
                Ok(_) => {}
                Err(reason) => {
                    unreadable.push(Unreadable::of(&name, &body, reason, self.ids));
                    continue;
                }
            }
            if !self.dry_run {
                self.call(|| lake::delete_version(&self.s3, bucket, &version.key, &version.version_id))
                    .await?;
            }
            deleted.push(name);
        }
        Ok((deleted, unreadable))
    }
}

/// Searches the lake's batch files of the range and writes those holding the players'
/// lines again without them.
async fn forget_in_lake(
    aws: &AwsClients,
    args: &ForgetArgs,
    ids: &BTreeSet<String>,
) -> Result<LakeReceipt, ForgetError> {
    let eraser = LakeEraser {
        s3: aws.s3(),
        writer: Lake {
            s3: aws.s3(),
            bucket: args.bucket.clone(),
            sse_kms_key_id: args.sse_kms_key_id.clone(),
        },
        ids,
        dry_run: args.dry_run,
        never: CancellationToken::new(),
    };
    let mut receipt = LakeReceipt {
        bucket: args.bucket.clone(),
        since: rfc3339(args.since.0),
        until: rfc3339(args.until.0),
        ..LakeReceipt::default()
    };
    let folders: Vec<(BatchKind, String)> = [BatchKind::Events, BatchKind::Errors]
        .into_iter()
        .flat_map(|kind| {
            hour_prefixes(kind, args.since.0, args.until.0)
                .into_iter()
                .map(move |prefix| (kind, prefix))
        })
        .collect();
    let progress = crate::progress::bar(
        args.progress,
        folders.len() as u64,
        "searching the lake {bar:30} {pos}/{len} hours, {msg}",
    );
    for (kind, prefix) in folders {
        let listed = eraser.call(|| lake::list(&eraser.s3, &args.bucket, &prefix)).await?;
        for object in listed.iter().filter(|o| o.key.ends_with(".gzip")) {
            receipt.objects_searched += 1;
            match eraser.search_object(kind, &object.key).await? {
                Searched::Clean => {}
                Searched::Rewritten(rewritten) => {
                    receipt.lines_removed += rewritten.lines_removed;
                    receipt.objects_rewritten.push(rewritten);
                }
                Searched::Unreadable(unreadable) => receipt.unreadable.push(unreadable),
            }
        }
        let (deleted, unreadable) = eraser.sweep_old_versions(kind, &prefix).await?;
        receipt.old_versions_deleted.extend(deleted);
        receipt.unreadable.extend(unreadable);
        progress.inc(1);
        progress.set_message(format!("{} lines removed", receipt.lines_removed));
    }
    progress.finish_and_clear();
    Ok(receipt)
}

/// Erases the players (or, on a dry run, says what would be erased) and returns the receipt.
pub async fn run(aws: &AwsClients, warehouse: &Warehouse, args: &ForgetArgs) -> Result<Receipt, ForgetError> {
    let ids = client_ids(args)?;
    if args.since.0 >= args.until.0 {
        return Err(ForgetError::EmptyRange);
    }
    let started_at = jiff::Timestamp::now();
    let never = CancellationToken::new();
    let policy = &RetryPolicy::COMMAND;

    let mut events_deleted = 0;
    for chunk in ids.chunks(warehouse::sql::MAX_CLIENTS_PER_FORGET) {
        events_deleted += if args.dry_run {
            warehouse.count_events_of(chunk).await?
        } else {
            retry(policy, &never, || warehouse.forget(chunk))
                .await
                .map_err(|e| e.into_error())?
                .events_deleted
        };
    }

    let dynamodb = aws.dynamodb();
    let mut items_deleted = 0;
    if !args.dry_run {
        for id in &ids {
            let deleted = retry(policy, &never, || {
                player_state::delete(&dynamodb, &args.player_state_table, id)
            })
            .await
            .map_err(|e| e.into_error())?;
            items_deleted += u64::from(deleted);
        }
    }

    let set: BTreeSet<String> = ids.iter().cloned().collect();
    let lake = forget_in_lake(aws, args, &set).await?;

    let mut receipt = Receipt {
        command: "forget",
        dry_run: args.dry_run,
        started_at: started_at.to_string(),
        finished_at: jiff::Timestamp::now().to_string(),
        client_ids: ids,
        warehouse: WarehouseReceipt {
            events_deleted,
            tombstoned: !args.dry_run,
        },
        player_state: PlayerStateReceipt {
            table: args.player_state_table.clone(),
            items_deleted,
        },
        lake,
        receipt: None,
    };
    if !args.dry_run {
        let key = format!(
            "receipts/forget-{}-{}.json",
            started_at.strftime("%Y%m%dT%H%M%S%.3fZ"),
            &receipt.client_ids[0][..8]
        );
        receipt.receipt = Some(format!("s3://{}/{key}", args.bucket));
        let body = serde_json::to_vec_pretty(&receipt).map_err(|e| ForgetError::Receipt(e.to_string()))?;
        let writer = Lake {
            s3: aws.s3(),
            bucket: args.bucket.clone(),
            sse_kms_key_id: args.sse_kms_key_id.clone(),
        };
        retry(policy, &never, || writer.put_json(&key, Bytes::from(body.clone())))
            .await
            .map_err(|e| e.into_error())?;
    }
    Ok(receipt)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GONE: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";
    const KEPT: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";

    fn ids() -> BTreeSet<String> {
        BTreeSet::from([GONE.to_string()])
    }

    fn event_line(client: &str, n: u32) -> String {
        format!(r#"{{"event_id":"00000000-0000-4000-8000-{n:012}","client_id":"{client}","event_type":"x"}}"#)
    }

    fn rejected_line(raw: &[u8]) -> String {
        let record = RejectedRecord {
            reason: "malformed_json".into(),
            field: None,
            detail: "not JSON".into(),
            shard: "shardId-0".into(),
            sequence: "1".into(),
            subsequence: 0,
            arrival: 0,
            raw_base64: RejectedRecord::encode_raw(raw),
        };
        let mut out = Vec::new();
        record.write_json_line(&mut out);
        String::from_utf8(out).expect("utf-8").trim_end().to_string()
    }

    #[test]
    fn an_event_line_is_about_a_player_by_its_client_id_only() {
        assert!(is_about(BatchKind::Events, event_line(GONE, 1).as_bytes(), &ids()));
        assert!(is_about(
            BatchKind::Events,
            event_line(&GONE.to_uppercase(), 1).as_bytes(),
            &ids()
        ));
        assert!(!is_about(BatchKind::Events, event_line(KEPT, 1).as_bytes(), &ids()));
        // Their id as another player's event id is not their event.
        let other = format!(r#"{{"event_id":"{GONE}","client_id":"{KEPT}"}}"#);
        assert!(!is_about(BatchKind::Events, other.as_bytes(), &ids()));
    }

    #[test]
    fn a_rejected_record_is_about_a_player_wherever_their_id_is_in_its_bytes() {
        let broken = format!(r#"{{"client_id": "{}", "event_ty"#, GONE.to_uppercase());
        assert!(is_about(
            BatchKind::Errors,
            rejected_line(broken.as_bytes()).as_bytes(),
            &ids()
        ));
        assert!(!is_about(
            BatchKind::Errors,
            rejected_line(b"{broken").as_bytes(),
            &ids()
        ));
        let binary = [&[0xff, 0x00][..], GONE.as_bytes(), &[0x9f]].concat();
        assert!(is_about(BatchKind::Errors, rejected_line(&binary).as_bytes(), &ids()));
    }

    #[test]
    fn a_file_is_rewritten_only_when_it_holds_them_and_keeps_every_other_line_as_it_was() {
        let text = [event_line(KEPT, 1), event_line(GONE, 2), event_line(KEPT, 3)].join("\n") + "\n";
        let (kept, removed, lines_kept) = without(BatchKind::Events, text.as_bytes(), &ids()).expect("rewritten");
        assert_eq!((removed, lines_kept), (1, 2));
        assert_eq!(
            String::from_utf8(kept).expect("utf-8"),
            format!("{}\n{}\n", event_line(KEPT, 1), event_line(KEPT, 3))
        );
        let clean = event_line(KEPT, 1) + "\n";
        assert!(without(BatchKind::Events, clean.as_bytes(), &ids()).is_none());
        let round = gunzip(&gzip(text.as_bytes()).expect("gzip")).expect("gunzip");
        assert_eq!(round, text.as_bytes());
    }

    #[test]
    fn ids_are_checked_normalized_and_deduplicated() {
        let listed = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            normalized_ids(&listed(&[
                &format!(" {} ", GONE.to_uppercase()),
                "# a comment",
                "",
                GONE,
                KEPT
            ]))
            .expect("ids"),
            [GONE, KEPT]
        );
        for bad in [&["x' OR 1=1 --"][..], &[][..]] {
            let error = normalized_ids(&listed(bad)).expect_err("refused");
            assert!(error.to_string().starts_with("FORGET_CLIENT_IDS"), "{error}");
        }
    }
}
