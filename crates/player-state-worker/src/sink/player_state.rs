//! PlayerState's writes: the events stage moves players, the pruner deletes idle ones.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use live_state::player_state::{LAST_UPDATED, LEVEL_ID, PLAYER_ID};
use pipeline_runtime::error::{AwsError, ErrorKind};

/// What the functions of this module need.
pub const IAM_ACTIONS: &[&str] = &["dynamodb:UpdateItem", "dynamodb:Scan", "dynamodb:DeleteItem"];

/// What a conditional write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Moved,
    /// PlayerState already holds a later event: this one is older news. (A write of ours
    /// applied before its answer was lost cannot look like this: `lastUpdated <= :ts`
    /// holds again for the same event, so its retry succeeds.)
    Stale,
}

/// UpdateItem: `player` is on `level` as of `timestamp` (event time, ms), on condition
/// that the item holds no later event. The item (a player id of at most 255 bytes and
/// a level id of at most 64, by the event model's rules) stays far under DynamoDB's
/// 400 KB; a key DynamoDB refuses anyway fails as [`ErrorKind::Permanent`].
pub async fn move_player(
    dynamodb: &Client,
    table: &str,
    player: &str,
    level: &str,
    timestamp: i64,
) -> Result<Written, AwsError> {
    let result = dynamodb
        .update_item()
        .table_name(table)
        .key(PLAYER_ID, AttributeValue::S(player.to_string()))
        .update_expression(format!("SET {LEVEL_ID} = :level, {LAST_UPDATED} = :ts"))
        .condition_expression(format!("attribute_not_exists({LAST_UPDATED}) OR {LAST_UPDATED} <= :ts"))
        .expression_attribute_values(":level", AttributeValue::S(level.to_string()))
        .expression_attribute_values(":ts", AttributeValue::N(timestamp.to_string()))
        .send()
        .await;
    match result.map_err(|e| AwsError::from_sdk("dynamodb:UpdateItem", e)) {
        Ok(_) => Ok(Written::Moved),
        Err(error) if error.kind == ErrorKind::ConditionFailed => Ok(Written::Stale),
        Err(error) => Err(error),
    }
}

/// The key a Scan continues from (`LastEvaluatedKey`).
pub type Key = HashMap<String, AttributeValue>;

/// A player the scan found idle: its key and the `lastUpdated` it was seen with.
#[derive(Debug, Clone)]
pub struct IdlePlayer {
    pub player: AttributeValue,
    pub seen: AttributeValue,
}

/// One page of players whose last event is older than `cutoff_ms`.
#[derive(Debug, Clone, Default)]
pub struct IdlePage {
    pub players: Vec<IdlePlayer>,
    /// Where the next page starts; `None` after the segment's last page.
    pub next: Option<Key>,
}

/// Scan of segment `segment` of `total_segments` (parallel scan: DynamoDB takes up to
/// 1,000,000 segments, `PRUNE_SEGMENTS` at most 64), one page of up to 1 MB read from
/// `start`, filtered to players idle since before `cutoff_ms` and projected to the
/// two attributes a conditional delete needs.
pub async fn scan_idle(
    dynamodb: &Client,
    table: &str,
    segment: i32,
    total_segments: i32,
    cutoff_ms: i64,
    start: Option<Key>,
) -> Result<IdlePage, AwsError> {
    let page = dynamodb
        .scan()
        .table_name(table)
        .segment(segment)
        .total_segments(total_segments)
        .filter_expression(format!("{LAST_UPDATED} < :cutoff"))
        .projection_expression(format!("{PLAYER_ID}, {LAST_UPDATED}"))
        .expression_attribute_values(":cutoff", AttributeValue::N(cutoff_ms.to_string()))
        .set_exclusive_start_key(start)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("dynamodb:Scan", e))?;
    let players = page
        .items()
        .iter()
        .filter_map(|item| {
            Some(IdlePlayer {
                player: item.get(PLAYER_ID)?.clone(),
                seen: item.get(LAST_UPDATED)?.clone(),
            })
        })
        .collect();
    Ok(IdlePage {
        players,
        next: page.last_evaluated_key.filter(|key| !key.is_empty()),
    })
}

/// DeleteItem of an idle player, on condition that its `lastUpdated` has not moved
/// since the scan. Returns whether it was deleted: a failed condition means a new
/// event moved the player (still present), or this delete was applied before its
/// answer was lost (gone); either way there is nothing left to do.
pub async fn delete_if_unchanged(dynamodb: &Client, table: &str, idle: IdlePlayer) -> Result<bool, AwsError> {
    let deleted = dynamodb
        .delete_item()
        .table_name(table)
        .key(PLAYER_ID, idle.player)
        .condition_expression(format!("{LAST_UPDATED} = :seen"))
        .expression_attribute_values(":seen", idle.seen)
        .send()
        .await;
    match deleted.map_err(|e| AwsError::from_sdk("dynamodb:DeleteItem", e)) {
        Ok(_) => Ok(true),
        Err(error) if error.kind == ErrorKind::ConditionFailed => Ok(false),
        Err(error) => Err(error),
    }
}
