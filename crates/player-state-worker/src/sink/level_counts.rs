//! LevelState and Transitions writes of the level stage: the transaction that applies a
//! chunk's counts and moves the guard (read through `live_state::transitions::read_guard`).

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem, Update};
use live_state::level_state::{self, PLAYER_COUNT};
use live_state::transitions::{
    BUCKET_START, EXPIRES_AT, FROM_LEVEL, LAST_SEQUENCE, TO_LEVEL, TRANSITION, TRANSITION_COUNT, guard_key,
};
use pipeline_runtime::error::{AwsError, Classified, ErrorKind, transaction_applied};
use shard_consumer::SequenceNumber;

use crate::levels::Effect;

/// What the functions of this module need. TransactWriteItems is authorized per item,
/// and its items are updates only.
pub const IAM_ACTIONS: &[&str] = &["dynamodb:UpdateItem"];

pub use live_state::level_state::MAX_TRANSACTION_ITEMS;
/// Count updates one transaction can hold beside its guard.
pub const MAX_COUNT_ITEMS: usize = MAX_TRANSACTION_ITEMS - 1;

/// The two tables the level stage writes.
#[derive(Debug, Clone, Copy)]
pub struct Tables<'a> {
    pub dynamodb: &'a Client,
    pub level_table: &'a str,
    pub transitions_table: &'a str,
}

/// Why a chunk was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The guard's condition failed: a replay, another writer, or this very write applied
    /// before its answer was lost. Re-reading the guard tells them apart.
    #[error("the guard moved since it was read")]
    GuardMoved,
    #[error(transparent)]
    Aws(#[from] AwsError),
}

impl Classified for ApplyError {
    fn kind(&self) -> ErrorKind {
        match self {
            ApplyError::GuardMoved => ErrorKind::ConditionFailed,
            ApplyError::Aws(error) => error.kind,
        }
    }
}

/// One chunk's transaction: the counts of `effect`, and the guard of `shard_id` moved
/// from `guard` (as read) to `last`.
#[derive(Debug, Clone, Copy)]
pub struct Chunk<'a> {
    pub shard_id: &'a str,
    /// At most [`MAX_COUNT_ITEMS`] items (`Effect::items`).
    pub effect: &'a Effect,
    pub guard: Option<&'a SequenceNumber>,
    pub last: &'a SequenceNumber,
    /// When the transition counts expire, epoch seconds.
    pub transitions_expire_at: i64,
    /// When the guard expires, epoch seconds.
    pub guard_expires_at: i64,
}

/// TransactWriteItems of `chunk`: all of it or nothing. At most
/// [`MAX_TRANSACTION_ITEMS`] items (the caller cuts chunks to [`MAX_COUNT_ITEMS`]
/// counts); each item is two level ids of at most 64 bytes and a few numbers, so a
/// transaction stays far under its 4 MB and each item under 400 KB. Counts change only
/// by `ADD`, so concurrent writers of other shards never conflict on a value. A failed
/// guard condition is [`ApplyError::GuardMoved`].
pub async fn apply(tables: Tables<'_>, chunk: &Chunk<'_>) -> Result<(), ApplyError> {
    let items = transaction(tables.level_table, tables.transitions_table, chunk)?;
    let result = tables
        .dynamodb
        .transact_write_items()
        .set_transact_items(Some(items))
        .send()
        .await;
    match transaction_applied(result)? {
        true => Ok(()),
        false => Err(ApplyError::GuardMoved),
    }
}

fn invalid_request(error: aws_sdk_dynamodb::error::BuildError) -> AwsError {
    AwsError::new("dynamodb:TransactWriteItems", ErrorKind::Fatal, error.to_string())
}

fn item(update: Update) -> TransactWriteItem {
    TransactWriteItem::builder().update(update).build()
}

/// The items of `chunk`'s transaction: level counts, transition counts, the guard last.
fn transaction(
    level_table: &str,
    transitions_table: &str,
    chunk: &Chunk<'_>,
) -> Result<Vec<TransactWriteItem>, AwsError> {
    let effect = chunk.effect;
    let mut items = Vec::with_capacity(effect.items() + 1);
    for (level, delta) in &effect.deltas {
        let update = Update::builder()
            .table_name(level_table)
            .key(level_state::LEVEL_ID, AttributeValue::S(level.clone()))
            .update_expression(format!("ADD {PLAYER_COUNT} :delta"))
            .expression_attribute_values(":delta", AttributeValue::N(delta.to_string()))
            .build()
            .map_err(invalid_request)?;
        items.push(item(update));
    }
    let transitions_expire = AttributeValue::N(chunk.transitions_expire_at.to_string());
    for (key, count) in &effect.transitions {
        let update = Update::builder()
            .table_name(transitions_table)
            .key(BUCKET_START, AttributeValue::N(key.bucket_start.to_string()))
            .key(TRANSITION, AttributeValue::S(key.name()))
            .update_expression(format!(
                "ADD {TRANSITION_COUNT} :count SET {FROM_LEVEL} = :from, {TO_LEVEL} = :to, {EXPIRES_AT} = :expires"
            ))
            .expression_attribute_values(":count", AttributeValue::N(count.to_string()))
            .expression_attribute_values(":from", AttributeValue::S(key.from.clone()))
            .expression_attribute_values(":to", AttributeValue::S(key.to.clone()))
            .expression_attribute_values(":expires", transitions_expire.clone())
            .build()
            .map_err(invalid_request)?;
        items.push(item(update));
    }
    let guard = Update::builder()
        .table_name(transitions_table)
        .set_key(Some(guard_key(chunk.shard_id)))
        .update_expression(format!("SET {LAST_SEQUENCE} = :last, {EXPIRES_AT} = :expires"))
        .expression_attribute_values(":last", AttributeValue::S(chunk.last.to_string()))
        .expression_attribute_values(":expires", AttributeValue::N(chunk.guard_expires_at.to_string()));
    let guard = match chunk.guard {
        Some(read) => guard
            .condition_expression(format!("{LAST_SEQUENCE} = :read"))
            .expression_attribute_values(":read", AttributeValue::S(read.to_string())),
        None => guard.condition_expression(format!("attribute_not_exists({LAST_SEQUENCE})")),
    };
    items.push(item(guard.build().map_err(invalid_request)?));
    Ok(items)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::levels::TransitionKey;

    fn sequence(n: u32) -> SequenceNumber {
        SequenceNumber::parse(&n.to_string()).expect("a sequence number")
    }

    #[test]
    fn a_transaction_holds_each_count_once_and_the_guard_last() {
        let effect = Effect {
            deltas: BTreeMap::from([("a".to_string(), -1), ("b".to_string(), 1)]),
            transitions: BTreeMap::from([(
                TransitionKey {
                    bucket_start: 60_000,
                    from: "a".into(),
                    to: "b".into(),
                },
                1,
            )]),
        };
        let (read, last) = (sequence(7), sequence(9));
        let chunk = |guard| Chunk {
            shard_id: "shard-1",
            effect: &effect,
            guard,
            last: &last,
            transitions_expire_at: 100,
            guard_expires_at: 200,
        };
        let items = transaction("Levels", "Transitions", &chunk(Some(&read))).expect("items");
        let updates: Vec<&Update> = items.iter().filter_map(|i| i.update()).collect();
        assert_eq!(updates.len(), 4);
        assert_eq!(updates.iter().filter(|u| u.table_name() == "Levels").count(), 2);
        let guard = updates[3];
        assert_eq!(guard.key(), &guard_key("shard-1"));
        assert_eq!(guard.condition_expression(), Some("lastSequence = :read"));
        let values = guard.expression_attribute_values().expect("values");
        assert_eq!(values[":read"], AttributeValue::S("7".into()));
        assert_eq!(values[":last"], AttributeValue::S("9".into()));
        assert_eq!(values[":expires"], AttributeValue::N("200".into()));
        let first = transaction("Levels", "Transitions", &chunk(None)).expect("items");
        let guard = first.last().and_then(|i| i.update()).expect("the guard");
        assert_eq!(guard.condition_expression(), Some("attribute_not_exists(lastSequence)"));
    }
}
