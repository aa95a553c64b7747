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

use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem, Update};
use aws_sdk_dynamodbstreams::types::AttributeValue as StreamValue;
use pipeline_runtime::Metrics;
use shard_consumer::backoff::Backoff;
use shard_consumer::dynamodb_streams::ChangeRecord;
use shard_consumer::{Batch, Checkpointer, ProcessorError, ProcessorFactory, RecordProcessor, SequenceNumber};

use crate::levels::{Effect, LevelChange, chunk_ends, effect};

pub const APPLICATION: &str = "level-state";
/// Guards live in the Transitions table under this bucket (no event time is negative).
pub const GUARD_BUCKET: i64 = -1;
/// DynamoDB's limit of items per transaction, less the guard.
const MAX_COUNT_ITEMS: usize = 99;

pub struct LevelStage {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub level_table: String,
    pub transitions_table: String,
    pub bucket: Duration,
    pub transition_ttl: Duration,
    pub metrics: Metrics,
}

pub struct LevelProcessorFactory(pub Arc<LevelStage>);

impl ProcessorFactory<ChangeRecord> for LevelProcessorFactory {
    type Processor = LevelProcessor;
    fn create(&self, shard_id: &str) -> LevelProcessor {
        LevelProcessor {
            stage: self.0.clone(),
            shard_id: shard_id.to_string(),
        }
    }
}

pub struct LevelProcessor {
    stage: Arc<LevelStage>,
    shard_id: String,
}

/// Why a chunk was not applied.
#[derive(Debug, thiserror::Error)]
enum ApplyError {
    #[error("the guard moved since it was read (a replay or another writer)")]
    GuardMoved,
    #[error(transparent)]
    Aws(#[from] aws_sdk_dynamodb::Error),
}

fn level_of(image: Option<&HashMap<String, StreamValue>>) -> Option<String> {
    image?.get("levelId")?.as_s().ok().cloned()
}

fn last_updated(image: Option<&HashMap<String, StreamValue>>) -> Option<i64> {
    image?.get("lastUpdated")?.as_n().ok()?.parse().ok()
}

/// The level move a stream record describes.
pub fn level_change(record: &ChangeRecord) -> LevelChange {
    LevelChange {
        from: level_of(record.old_image.as_ref()),
        to: level_of(record.new_image.as_ref()),
        at: last_updated(record.new_image.as_ref()),
    }
}

fn guard_key(shard_id: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("bucketStart".to_string(), AttributeValue::N(GUARD_BUCKET.to_string())),
        ("transition".to_string(), AttributeValue::S(format!("guard#{shard_id}"))),
    ])
}

impl LevelStage {
    async fn read_guard(&self, shard_id: &str) -> Result<Option<SequenceNumber>, ProcessorError> {
        let item = self
            .dynamodb
            .get_item()
            .table_name(&self.transitions_table)
            .set_key(Some(guard_key(shard_id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(aws_sdk_dynamodb::Error::from)?
            .item;
        let sequence = item
            .as_ref()
            .and_then(|i| i.get("lastSequence"))
            .and_then(|v| v.as_s().ok());
        Ok(match sequence {
            Some(text) => Some(SequenceNumber::parse(text)?),
            None => None,
        })
    }

    /// One transaction: the counts of `effect` and the guard from `guard` to `last`.
    async fn apply(
        &self,
        shard_id: &str,
        effect: &Effect,
        guard: Option<&SequenceNumber>,
        last: &SequenceNumber,
    ) -> Result<(), ApplyError> {
        let stage = self;
        let expires = (pipeline_runtime::clock::now_secs()
            + i64::try_from(stage.transition_ttl.as_secs()).unwrap_or(i64::MAX))
        .to_string();
        let mut items = Vec::with_capacity(effect.items() + 1);
        for (level, delta) in &effect.deltas {
            let update = Update::builder()
                .table_name(&stage.level_table)
                .key("levelId", AttributeValue::S(level.clone()))
                .update_expression("ADD playerCount :delta")
                .expression_attribute_values(":delta", AttributeValue::N(delta.to_string()))
                .build()
                .map_err(aws_sdk_dynamodb::Error::from)?;
            items.push(TransactWriteItem::builder().update(update).build());
        }
        for (key, count) in &effect.transitions {
            let update = Update::builder()
                .table_name(&stage.transitions_table)
                .key("bucketStart", AttributeValue::N(key.bucket_start.to_string()))
                .key("transition", AttributeValue::S(key.name()))
                .update_expression(
                    "ADD transitionCount :count SET fromLevel = :from, toLevel = :to, expiresAt = :expires",
                )
                .expression_attribute_values(":count", AttributeValue::N(count.to_string()))
                .expression_attribute_values(":from", AttributeValue::S(key.from.clone()))
                .expression_attribute_values(":to", AttributeValue::S(key.to.clone()))
                .expression_attribute_values(":expires", AttributeValue::N(expires.clone()))
                .build()
                .map_err(aws_sdk_dynamodb::Error::from)?;
            items.push(TransactWriteItem::builder().update(update).build());
        }
        let mut guard_update = Update::builder()
            .table_name(&stage.transitions_table)
            .set_key(Some(guard_key(shard_id)))
            .update_expression("SET lastSequence = :last, expiresAt = :expires")
            .expression_attribute_values(":last", AttributeValue::S(last.to_string()))
            .expression_attribute_values(":expires", AttributeValue::N(expires));
        guard_update = match guard {
            Some(read) => guard_update
                .condition_expression("lastSequence = :read")
                .expression_attribute_values(":read", AttributeValue::S(read.to_string())),
            None => guard_update.condition_expression("attribute_not_exists(lastSequence)"),
        };
        items.push(
            TransactWriteItem::builder()
                .update(guard_update.build().map_err(aws_sdk_dynamodb::Error::from)?)
                .build(),
        );
        let result = stage
            .dynamodb
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) => {
                let guard_moved = error.as_service_error().is_some_and(|e| {
                    e.is_transaction_canceled_exception()
                        && e.meta().message().is_some_and(|m| m.contains("ConditionalCheckFailed"))
                });
                if guard_moved {
                    Err(ApplyError::GuardMoved)
                } else {
                    Err(aws_sdk_dynamodb::Error::from(error).into())
                }
            }
        }
    }

    /// Applies every record of `shard_id` after its guard, chunk by chunk. Safe to call
    /// again with any overlapping records, in any batch sizes: nothing is applied twice.
    pub async fn apply_records(&self, shard_id: &str, records: &[ChangeRecord]) -> Result<(), ProcessorError> {
        let stage = self;
        let bucket_ms = i64::try_from(stage.bucket.as_millis()).unwrap_or(60_000).max(1);
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        'read_guard: loop {
            let guard = self.read_guard(shard_id).await?;
            let pending: Vec<&ChangeRecord> = records
                .iter()
                .filter(|r| guard.as_ref().is_none_or(|g| r.position.sequence > *g))
                .collect();
            let skipped = records.len() - pending.len();
            if skipped > 0 {
                stage.metrics.count("ReplayedRecordsSkipped", skipped as u64, &[]);
            }
            let changes: Vec<LevelChange> = pending.iter().map(|r| level_change(r)).collect();
            let mut guard = guard;
            let mut start = 0;
            for end in chunk_ends(&changes, bucket_ms, MAX_COUNT_ITEMS) {
                let part = effect(&changes[start..end], bucket_ms);
                let last = &pending[end - 1].position.sequence;
                if !part.is_empty() {
                    match self.apply(shard_id, &part, guard.as_ref(), last).await {
                        Ok(()) => {
                            stage.metrics.count("LevelTransactions", 1, &[]);
                            stage.metrics.count("LevelDeltasApplied", part.deltas.len() as u64, &[]);
                            stage
                                .metrics
                                .count("TransitionsApplied", part.transitions.len() as u64, &[]);
                            guard = Some(last.clone());
                        }
                        Err(ApplyError::GuardMoved) => {
                            stage.metrics.count("GuardConflicts", 1, &[]);
                            tokio::time::sleep(backoff.next_delay()).await;
                            continue 'read_guard;
                        }
                        Err(ApplyError::Aws(error)) => return Err(error.into()),
                    }
                }
                start = end;
            }
            return Ok(());
        }
    }
}

impl RecordProcessor<ChangeRecord> for LevelProcessor {
    async fn process(
        &mut self,
        batch: &Batch<ChangeRecord>,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        self.stage.apply_records(&self.shard_id, &batch.records).await?;
        checkpointer.checkpoint_delivered().await?;
        Ok(())
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) -> Result<(), ProcessorError> {
        checkpointer.checkpoint_delivered().await?;
        Ok(())
    }

    async fn shutdown_requested(&mut self, _checkpointer: &mut Checkpointer) -> Result<(), ProcessorError> {
        Ok(())
    }
}
