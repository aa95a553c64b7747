//! LevelState: one item per level with its player count, the number of PlayerState
//! items on that level. A level that emptied keeps its item with a count of 0.

use aws_sdk_dynamodb::Client;
use pipeline_runtime::AwsError;
use pipeline_runtime::resources::{KeyAttribute, TableSpec};
use serde::{Deserialize, Serialize};

use crate::scan::{Consistency, number, scan_all, scan_all_read, text};

/// Hash key: the level's id.
pub const LEVEL_ID: &str = "levelId";
/// Players on the level now (a number, changed only by `ADD`).
pub const PLAYER_COUNT: &str = "playerCount";

/// DynamoDB's limit of items in one TransactWriteItems: every transaction that writes
/// counts (the level stage's, reconcile-levels') is cut to it.
pub const MAX_TRANSACTION_ITEMS: usize = 100;

/// The table's shape: keyed by level.
pub fn spec(name: &str) -> TableSpec {
    TableSpec::hash_keyed(name, KeyAttribute::string(LEVEL_ID))
}

/// A level and how many players are on it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LevelCount {
    #[serde(rename = "levelId")]
    pub level_id: String,
    #[serde(rename = "playerCount")]
    pub player_count: i64,
}

/// Every level with players on it, most crowded first (a Scan of the whole table,
/// page by page: one item per level keeps it small).
pub async fn read_counts(dynamodb: &Client, table: &str) -> Result<Vec<LevelCount>, AwsError> {
    let mut counts = Vec::new();
    scan_all(dynamodb, table, None, |item| {
        let count = LevelCount {
            level_id: text(item, LEVEL_ID),
            player_count: number(item, PLAYER_COUNT),
        };
        if count.player_count != 0 {
            counts.push(count);
        }
    })
    .await?;
    counts.sort_by(|a, b| {
        b.player_count
            .cmp(&a.player_count)
            .then_with(|| a.level_id.cmp(&b.level_id))
    });
    Ok(counts)
}

/// Every level item, zero counts included, read as `consistency` says, by level id
/// (what a correction is conditioned on: a level with no item reads as absent).
pub async fn read_every_count(
    dynamodb: &Client,
    table: &str,
    consistency: Consistency,
) -> Result<Vec<LevelCount>, AwsError> {
    let mut counts = Vec::new();
    scan_all_read(dynamodb, table, None, consistency, |item| {
        counts.push(LevelCount {
            level_id: text(item, LEVEL_ID),
            player_count: number(item, PLAYER_COUNT),
        });
    })
    .await?;
    counts.sort_by(|a, b| a.level_id.cmp(&b.level_id));
    Ok(counts)
}
