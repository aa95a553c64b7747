//! Transitions: how many players moved from one level to another within a time
//! bucket, kept for the TTL on [`EXPIRES_AT`]. The level stage's guards (the last
//! stream sequence applied per shard) live in this table under [`GUARD_BUCKET`], so a
//! count and its guard move in one transaction; readers skip them.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use pipeline_runtime::AwsError;
use pipeline_runtime::resources::{KeyAttribute, TableSpec};
use serde::{Deserialize, Serialize};

use crate::scan::{Filter, number, scan_all, text};

/// Hash key: the bucket's start, epoch ms.
pub const BUCKET_START: &str = "bucketStart";
/// Range key: `from`␟`to` (see [`sort_key`]), or `guard#<shard>` for a guard.
pub const TRANSITION: &str = "transition";
/// Players who made this move within the bucket (changed only by `ADD`).
pub const TRANSITION_COUNT: &str = "transitionCount";
/// The level moved from.
pub const FROM_LEVEL: &str = "fromLevel";
/// The level moved to.
pub const TO_LEVEL: &str = "toLevel";
/// Expiry, epoch seconds (the table's TTL attribute).
pub const EXPIRES_AT: &str = "expiresAt";
/// A guard's last applied stream sequence number.
pub const LAST_SEQUENCE: &str = "lastSequence";

/// Guards live under this bucket (no event time is negative).
pub const GUARD_BUCKET: i64 = -1;

/// Separates the two level ids in a transition's sort key. Level ids may hold no control
/// character (the event model's rule on every input path), so `from␟to` names one pair
/// only; the `→` used before did not (`a→b`→`c` and `a`→`b→c` were one item).
pub const SEPARATOR: char = '\u{1f}';

/// The table's shape: bucket and transition as keys, TTL on [`EXPIRES_AT`].
pub fn spec(name: &str) -> TableSpec {
    TableSpec {
        range_key: Some(KeyAttribute::string(TRANSITION)),
        ttl_attribute: Some(EXPIRES_AT),
        ..TableSpec::hash_keyed(name, KeyAttribute::number(BUCKET_START))
    }
}

/// The [`TRANSITION`] sort key of a move from `from` to `to`.
pub fn sort_key(from: &str, to: &str) -> String {
    format!("{from}{SEPARATOR}{to}")
}

/// The key of the guard of stream shard `shard_id`.
pub fn guard_key(shard_id: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (BUCKET_START.to_string(), AttributeValue::N(GUARD_BUCKET.to_string())),
        (TRANSITION.to_string(), AttributeValue::S(format!("guard#{shard_id}"))),
    ])
}

/// GetItem (strongly consistent) of the level stage's guard of stream shard
/// `shard_id`: the last sequence number applied, as stored, or `None` before the
/// shard's first transaction.
pub async fn read_guard(
    dynamodb: &aws_sdk_dynamodb::Client,
    transitions_table: &str,
    shard_id: &str,
) -> Result<Option<String>, pipeline_runtime::AwsError> {
    let item = crate::scan::get_consistent(dynamodb, transitions_table, guard_key(shard_id)).await?;
    Ok(item
        .as_ref()
        .and_then(|i| i.get(LAST_SEQUENCE))
        .and_then(|v| v.as_s().ok())
        .cloned())
}

/// How many players moved from one level to another within a time bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransitionCount {
    #[serde(rename = "bucketStart")]
    pub bucket_start: i64,
    pub from: String,
    pub to: String,
    pub count: i64,
}

/// Transition counts of buckets starting at or after `since_ms`, oldest first, guards
/// left out (a filtered Scan, page by page).
pub async fn read_since(dynamodb: &Client, table: &str, since_ms: i64) -> Result<Vec<TransitionCount>, AwsError> {
    let mut counts = Vec::new();
    let filter = Filter {
        expression: format!("{BUCKET_START} >= :since AND {BUCKET_START} > :guard"),
        numbers: &[(":since", since_ms), (":guard", GUARD_BUCKET)],
    };
    scan_all(dynamodb, table, Some(filter), |item| {
        counts.push(TransitionCount {
            bucket_start: number(item, BUCKET_START),
            from: text(item, FROM_LEVEL),
            to: text(item, TO_LEVEL),
            count: number(item, TRANSITION_COUNT),
        });
    })
    .await?;
    counts.sort_by(|a, b| (a.bucket_start, &a.from, &a.to).cmp(&(b.bucket_start, &b.from, &b.to)));
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sort_keys_name_one_pair_only() {
        assert_ne!(sort_key("a→b", "c"), sort_key("a", "b→c"));
        assert_eq!(sort_key("a", "b"), "a\u{1f}b");
    }

    #[test]
    fn guards_sort_before_every_bucket() {
        let key = guard_key("shard-1");
        assert_eq!(key[BUCKET_START], AttributeValue::N("-1".into()));
        assert_eq!(key[TRANSITION], AttributeValue::S("guard#shard-1".into()));
    }
}
