//! PlayerState: one item per present player. An event moves a player only forward in
//! event time; an idle player is deleted. Both reach LevelState through the stream.

use std::collections::BTreeMap;

use aws_sdk_dynamodb::Client;
use pipeline_runtime::AwsError;
use pipeline_runtime::resources::{KeyAttribute, TableSpec};

use crate::scan::{Consistency, scan_all_read, text};

/// Hash key: the player's id.
pub const PLAYER_ID: &str = "playerId";
/// The level the player is on.
pub const LEVEL_ID: &str = "levelId";
/// Event time (ms since the epoch) of the player's latest event.
pub const LAST_UPDATED: &str = "lastUpdated";

/// The table's shape: keyed by player, with a stream of old and new images.
pub fn spec(name: &str) -> TableSpec {
    TableSpec {
        stream: true,
        ..TableSpec::hash_keyed(name, KeyAttribute::string(PLAYER_ID))
    }
}

/// Players on each level, recounted from every item (a Scan, page by page): what
/// LevelState must hold. Items without a level are not counted.
pub async fn count_by_level(dynamodb: &Client, table: &str) -> Result<BTreeMap<String, i64>, AwsError> {
    count_by_level_read(dynamodb, table, Consistency::Eventual).await
}

/// [`count_by_level`], read as `consistency` says.
pub async fn count_by_level_read(
    dynamodb: &Client,
    table: &str,
    consistency: Consistency,
) -> Result<BTreeMap<String, i64>, AwsError> {
    let mut counts = BTreeMap::new();
    scan_all_read(dynamodb, table, None, consistency, |item| {
        let level = text(item, LEVEL_ID);
        if !level.is_empty() {
            *counts.entry(level).or_insert(0) += 1;
        }
    })
    .await?;
    Ok(counts)
}
