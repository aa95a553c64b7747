//! LevelState corrections of `reconcile-levels`: one transaction that sets some drifted
//! counts on the condition that those counts, and the level stage's guards it is given
//! (the caller's choice: those that may still move), still hold what was read. (The
//! guards are read through `live_state::transitions::read_guard`.)

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, ConditionCheck, TransactWriteItem, Update};
use live_state::level_state::{LEVEL_ID, PLAYER_COUNT};
use live_state::transitions::{LAST_SEQUENCE, guard_key};
use pipeline_runtime::error::{AwsError, ErrorKind, transaction_applied};

/// The IAM actions of this module's calls (TransactWriteItems is authorized per item:
/// updates of LevelState, condition checks of the guards in Transitions).
pub const IAM_ACTIONS: &[&str] = &["dynamodb:UpdateItem", "dynamodb:ConditionCheckItem"];

/// A count to set: `level_id` from `read` (0: no item, or no count) to `target`.
#[derive(Debug, Clone, Copy)]
pub struct CountUpdate<'a> {
    pub level_id: &'a str,
    pub read: i64,
    pub target: i64,
}

/// A guard the transaction is conditioned on: stream shard `shard_id` still at `last`
/// (`None`: no guard yet).
#[derive(Debug, Clone, Copy)]
pub struct GuardCheck<'a> {
    pub shard_id: &'a str,
    pub last: Option<&'a str>,
}

/// Why a transaction did not apply.
#[derive(Debug, thiserror::Error)]
pub enum TransactionError {
    /// A count or a guard no longer holds what was read.
    #[error("a count or a guard moved since it was read")]
    ConditionFailed,
    #[error(transparent)]
    Aws(#[from] AwsError),
}

fn invalid_request(error: aws_sdk_dynamodb::error::BuildError) -> AwsError {
    AwsError::new("dynamodb:TransactWriteItems", ErrorKind::Fatal, error.to_string())
}

fn guard_check(transitions_table: &str, guard: &GuardCheck<'_>) -> Result<TransactWriteItem, AwsError> {
    let check = ConditionCheck::builder()
        .table_name(transitions_table)
        .set_key(Some(guard_key(guard.shard_id)))
        .expression_attribute_names("#last", LAST_SEQUENCE);
    let check = match guard.last {
        Some(last) => check
            .condition_expression("#last = :last")
            .expression_attribute_values(":last", AttributeValue::S(last.to_string())),
        None => check.condition_expression("attribute_not_exists(#last)"),
    };
    Ok(TransactWriteItem::builder()
        .condition_check(check.build().map_err(invalid_request)?)
        .build())
}

fn count_update(level_table: &str, update: &CountUpdate<'_>) -> Result<TransactWriteItem, AwsError> {
    let request = Update::builder()
        .table_name(level_table)
        .key(LEVEL_ID, AttributeValue::S(update.level_id.to_string()))
        .update_expression("SET #count = :target")
        .expression_attribute_names("#count", PLAYER_COUNT)
        .expression_attribute_values(":target", AttributeValue::N(update.target.to_string()))
        .expression_attribute_values(":read", AttributeValue::N(update.read.to_string()));
    let request = if update.read == 0 {
        request.condition_expression("attribute_not_exists(#count) OR #count = :read")
    } else {
        request.condition_expression("#count = :read")
    };
    Ok(TransactWriteItem::builder()
        .update(request.build().map_err(invalid_request)?)
        .build())
}

/// TransactWriteItems: each guard in `guards` checked and each count in `updates` set,
/// or nothing. The caller keeps guards plus updates within DynamoDB's 100 items.
pub async fn set_counts(
    dynamodb: &Client,
    level_table: &str,
    transitions_table: &str,
    guards: &[GuardCheck<'_>],
    updates: &[CountUpdate<'_>],
) -> Result<(), TransactionError> {
    let mut items = Vec::with_capacity(guards.len() + updates.len());
    for guard in guards {
        items.push(guard_check(transitions_table, guard)?);
    }
    for update in updates {
        items.push(count_update(level_table, update)?);
    }
    let result = dynamodb
        .transact_write_items()
        .set_transact_items(Some(items))
        .send()
        .await;
    match transaction_applied(result)? {
        true => Ok(()),
        false => Err(TransactionError::ConditionFailed),
    }
}
