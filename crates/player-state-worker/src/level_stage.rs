//! Level stage: PlayerState's stream → LevelState and Transitions counts, exactly once.
//!
//! Per stream shard a guard item holds the last applied sequence number. Each chunk of
//! changes is one TransactWriteItems: the count updates and the guard moved to the
//! chunk's last sequence, conditioned on the guard still holding what was read. Records
//! at or before the guard are dropped before anything is computed, so a replay after a
//! crash, cut into different batches or not, applies nothing twice and skips nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodbstreams::types::AttributeValue as StreamValue;
use base64::Engine;
use event_model::{RejectedRecord, Rejection};
use live_state::player_state::{LAST_UPDATED, LEVEL_ID};
use pipeline_runtime::error::ErrorKind;
use pipeline_runtime::metrics::names;
use pipeline_runtime::retry::{RetryError, RetryPolicy, retry};
use pipeline_runtime::{Metrics, clock};
use serde_json::{Map, Value, json};
use shard_consumer::backoff::Backoff;
use shard_consumer::dynamodb_streams::ChangeRecord;
use shard_consumer::{Batch, BatchOutput, ProcessorError, SequenceNumber};
use tokio_util::sync::CancellationToken;

use crate::levels::{Effect, LevelChange, chunk_ends, effect};
use crate::quarantine::Quarantine;
use crate::sink::level_counts::{self, ApplyError, Chunk, MAX_COUNT_ITEMS, Tables};

pub const APPLICATION: &str = "level-state";
/// A guard must outlive every replay of its shard: DynamoDB Streams keeps a record 24 h,
/// so twice that, whatever the transitions' own TTL. A guard gone before its records
/// would let a replay count them again.
pub const MIN_GUARD_TTL: Duration = Duration::from_secs(48 * 3600);

pub struct LevelStage {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub level_table: String,
    pub transitions_table: String,
    pub bucket: Duration,
    pub transition_ttl: Duration,
    /// Where stream records with a level that cannot key a count go.
    pub quarantine: Quarantine,
    pub metrics: Metrics,
}

fn level_of(image: Option<&HashMap<String, StreamValue>>) -> Option<&str> {
    image?.get(LEVEL_ID)?.as_s().ok().map(String::as_str)
}

fn last_updated(image: Option<&HashMap<String, StreamValue>>) -> Option<i64> {
    image?.get(LAST_UPDATED)?.as_n().ok()?.parse().ok()
}

/// The level move a stream record describes, and why a level in it cannot key a count
/// (then that side counts as absent: LevelState stays the recount of every keyable level).
pub fn level_change(record: &ChangeRecord) -> (LevelChange, Option<Rejection>) {
    let mut rejection = None;
    let mut keyable = |level: Option<&str>| {
        let level = level?;
        match event_model::level_id("levelId", level) {
            Ok(_) => Some(level.to_string()),
            Err(why) => {
                rejection.get_or_insert(why);
                None
            }
        }
    };
    let from = keyable(level_of(record.old_image.as_ref()));
    let to = keyable(level_of(record.new_image.as_ref()));
    let change = LevelChange {
        from,
        to,
        at: last_updated(record.new_image.as_ref()),
    };
    (change, rejection)
}

/// A stream value as DynamoDB JSON (`{"S": "…"}`), for the raw bytes of a quarantined record.
fn dynamodb_json(value: &StreamValue) -> Value {
    let b64 = |b: &aws_sdk_dynamodbstreams::primitives::Blob| {
        Value::String(base64::engine::general_purpose::STANDARD.encode(b.as_ref()))
    };
    match value {
        StreamValue::S(s) => json!({ "S": s }),
        StreamValue::N(n) => json!({ "N": n }),
        StreamValue::B(b) => json!({ "B": b64(b) }),
        StreamValue::Bool(b) => json!({ "BOOL": b }),
        StreamValue::Null(_) => json!({ "NULL": true }),
        StreamValue::Ss(v) => json!({ "SS": v }),
        StreamValue::Ns(v) => json!({ "NS": v }),
        StreamValue::Bs(v) => json!({ "BS": v.iter().map(b64).collect::<Vec<_>>() }),
        StreamValue::L(v) => json!({ "L": v.iter().map(dynamodb_json).collect::<Vec<_>>() }),
        StreamValue::M(m) => json!({ "M": image_json(m) }),
        _ => Value::Null,
    }
}

fn image_json(image: &HashMap<String, StreamValue>) -> Value {
    let mut map = Map::new();
    for (name, value) in image {
        map.insert(name.clone(), dynamodb_json(value));
    }
    Value::Object(map)
}

/// A stream record the level stage cannot count, as `errors/` stores it: the raw bytes
/// are the record's keys and images in DynamoDB JSON.
fn rejected(shard_id: &str, record: &ChangeRecord, why: Rejection) -> RejectedRecord {
    let raw = json!({
        "Keys": image_json(&record.keys),
        "OldImage": record.old_image.as_ref().map(image_json),
        "NewImage": record.new_image.as_ref().map(image_json),
    });
    RejectedRecord {
        reason: why.reason.as_str().to_string(),
        field: why.field,
        detail: why.detail,
        shard: shard_id.to_string(),
        sequence: record.position.sequence.to_string(),
        subsequence: record.position.subsequence,
        arrival: record.approximate_creation_ms,
        raw_base64: RejectedRecord::encode_raw(raw.to_string().as_bytes()),
    }
}

impl LevelStage {
    fn tables(&self) -> Tables<'_> {
        Tables {
            dynamodb: &self.dynamodb,
            level_table: &self.level_table,
            transitions_table: &self.transitions_table,
        }
    }

    async fn read_guard(
        &self,
        shard_id: &str,
        stop: &CancellationToken,
    ) -> Result<Option<SequenceNumber>, ProcessorError> {
        let stored = retry(&RetryPolicy::SHARD_OUTPUT, stop, || {
            live_state::transitions::read_guard(&self.dynamodb, &self.transitions_table, shard_id)
        })
        .await
        .map_err(ProcessorError::of_own_request)?;
        match stored {
            Some(text) => SequenceNumber::parse(&text)
                .map(Some)
                .map_err(|e| ProcessorError::fatal(format!("guard of shard {shard_id}: {e}"))),
            None => Ok(None),
        }
    }

    /// One transaction: the counts of `effect` and the guard from `guard` to `last`.
    async fn apply(
        &self,
        shard_id: &str,
        effect: &Effect,
        guard: Option<&SequenceNumber>,
        last: &SequenceNumber,
    ) -> Result<(), ApplyError> {
        let now = clock::now_secs();
        let expires = |ttl: Duration| now + i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
        let chunk = Chunk {
            shard_id,
            effect,
            guard,
            last,
            transitions_expire_at: expires(self.transition_ttl),
            guard_expires_at: expires(guard_ttl(self.transition_ttl)),
        };
        level_counts::apply(self.tables(), &chunk).await
    }

    /// Applies every record of `shard_id` after its guard, chunk by chunk. Safe to call
    /// again with any overlapping records, in any batch sizes: nothing is applied twice.
    /// Records with a level that cannot key a count are quarantined first. `stop` (the
    /// lease lost) ends the retries of throttled and passing failures.
    pub async fn apply_records(
        &self,
        shard_id: &str,
        records: &[ChangeRecord],
        stop: &CancellationToken,
    ) -> Result<(), ProcessorError> {
        let stage = self;
        let bucket_ms = i64::try_from(stage.bucket.as_millis()).unwrap_or(60_000).max(1);
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        let mut quarantined = false;
        'read_guard: loop {
            if stop.is_cancelled() {
                // The lease went to another worker: its owner applies the rest.
                return Err(ProcessorError::new(ErrorKind::Transient, "the lease was lost"));
            }
            let guard = self.read_guard(shard_id, stop).await?;
            let pending: Vec<&ChangeRecord> = records
                .iter()
                .filter(|r| guard.as_ref().is_none_or(|g| r.position.sequence > *g))
                .collect();
            let skipped = records.len() - pending.len();
            if skipped > 0 {
                stage
                    .metrics
                    .count(names::REPLAYED_RECORDS_SKIPPED, skipped as u64, &[]);
            }
            let (changes, rejections): (Vec<LevelChange>, Vec<Option<Rejection>>) =
                pending.iter().map(|r| level_change(r)).unzip();
            if !quarantined {
                // Durable in errors/ before any guard moves past them.
                let rejects: Vec<RejectedRecord> = pending
                    .iter()
                    .zip(rejections)
                    .filter_map(|(record, why)| why.map(|why| rejected(shard_id, record, why)))
                    .collect();
                stage
                    .quarantine
                    .store(&rejects, stop)
                    .await
                    .map_err(ProcessorError::of_own_request)?;
                quarantined = true;
            }
            let mut guard = guard;
            let mut start = 0;
            for end in chunk_ends(&changes, bucket_ms, MAX_COUNT_ITEMS) {
                let part = effect(&changes[start..end], bucket_ms);
                let last = &pending[end - 1].position.sequence;
                if !part.is_empty() {
                    let applied = retry(&RetryPolicy::SHARD_OUTPUT, stop, || {
                        self.apply(shard_id, &part, guard.as_ref(), last)
                    })
                    .await;
                    match applied {
                        Ok(()) => {
                            stage.metrics.count(names::LEVEL_TRANSACTIONS, 1, &[]);
                            stage
                                .metrics
                                .count(names::LEVEL_DELTAS_APPLIED, part.deltas.len() as u64, &[]);
                            stage
                                .metrics
                                .count(names::TRANSITIONS_APPLIED, part.transitions.len() as u64, &[]);
                            guard = Some(last.clone());
                        }
                        Err(RetryError::Failed {
                            error: ApplyError::GuardMoved,
                            ..
                        }) => {
                            stage.metrics.count(names::GUARD_CONFLICTS, 1, &[]);
                            // Two writers taking turns settle sooner with a pause between rounds.
                            tokio::select! {
                                () = tokio::time::sleep(backoff.next_delay()) => {}
                                () = stop.cancelled() => {}
                            }
                            continue 'read_guard;
                        }
                        Err(error) => return Err(ProcessorError::of_own_request(error)),
                    }
                }
                start = end;
            }
            return Ok(());
        }
    }
}

/// Guards live at least [`MIN_GUARD_TTL`], longer when transitions do.
pub fn guard_ttl(transition_ttl: Duration) -> Duration {
    transition_ttl.max(MIN_GUARD_TTL)
}

impl BatchOutput<ChangeRecord> for LevelStage {
    async fn write(
        self: Arc<Self>,
        batch: &Batch<ChangeRecord>,
        stop: CancellationToken,
    ) -> Result<(), ProcessorError> {
        self.apply_records(&batch.shard_id, &batch.records, &stop).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_outlive_two_days_of_stream_retention() {
        assert_eq!(guard_ttl(Duration::from_secs(3600)), MIN_GUARD_TTL);
        assert_eq!(guard_ttl(Duration::from_secs(604_800)), Duration::from_secs(604_800));
    }
}
