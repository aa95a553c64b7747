//! A lease in the Java KCL 2.x attribute format, so a team can move a lease table
//! between the Java KCL and this crate.
//!
//! | attribute | type | meaning |
//! |---|---|---|
//! | `leaseKey` | S (hash key) | the shard id (or a singleton job's name) |
//! | `leaseOwner` | S, absent when free | worker id of the holder |
//! | `leaseCounter` | N | bumped by every renewal, take and checkpoint |
//! | `checkpoint` | S | a sequence number, or TRIM_HORIZON / LATEST / AT_TIMESTAMP / SHARD_END |
//! | `checkpointSubSequenceNumber` | N | index inside a KPL aggregate |
//! | `ownerSwitchesSinceCheckpoint` | N | takes since the last checkpoint |
//! | `parentShardId` | SS, absent without parents | the shard's parents |

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use crate::position::{Checkpoint, InvalidSequenceNumber};

pub const LEASE_KEY: &str = "leaseKey";
pub const LEASE_OWNER: &str = "leaseOwner";
pub const LEASE_COUNTER: &str = "leaseCounter";
pub const CHECKPOINT: &str = "checkpoint";
pub const CHECKPOINT_SUBSEQUENCE: &str = "checkpointSubSequenceNumber";
pub const OWNER_SWITCHES: &str = "ownerSwitchesSinceCheckpoint";
pub const PARENT_SHARD_ID: &str = "parentShardId";

/// One lease as read from the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub key: String,
    pub owner: Option<String>,
    pub counter: u64,
    pub checkpoint: Checkpoint,
    pub owner_switches_since_checkpoint: u64,
    pub parent_shard_ids: Vec<String>,
}

/// A lease item that does not have the KCL shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseFormatError {
    #[error("lease item has no {0} attribute of the right type")]
    Missing(&'static str),
    #[error("lease item attribute {0} is not a number")]
    NotANumber(&'static str),
    #[error(transparent)]
    Checkpoint(#[from] InvalidSequenceNumber),
}

impl Lease {
    /// A new, unowned lease for a shard.
    pub fn new(key: &str, checkpoint: Checkpoint, parent_shard_ids: Vec<String>) -> Self {
        Self {
            key: key.to_string(),
            owner: None,
            counter: 0,
            checkpoint,
            owner_switches_since_checkpoint: 0,
            parent_shard_ids,
        }
    }

    /// Reads a lease item.
    pub fn from_item(item: &HashMap<String, AttributeValue>) -> Result<Self, LeaseFormatError> {
        let string = |name: &'static str| match item.get(name) {
            Some(AttributeValue::S(s)) => Ok(Some(s.clone())),
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(_) => Err(LeaseFormatError::Missing(name)),
        };
        let number = |name: &'static str| match item.get(name) {
            Some(AttributeValue::N(n)) => n
                .parse::<u64>()
                .map(Some)
                .map_err(|_| LeaseFormatError::NotANumber(name)),
            None => Ok(None),
            Some(_) => Err(LeaseFormatError::NotANumber(name)),
        };
        let key = string(LEASE_KEY)?.ok_or(LeaseFormatError::Missing(LEASE_KEY))?;
        let checkpoint_text = string(CHECKPOINT)?.unwrap_or_else(|| Checkpoint::TRIM_HORIZON.to_string());
        let subsequence = number(CHECKPOINT_SUBSEQUENCE)?.unwrap_or(0);
        let parent_shard_ids = match item.get(PARENT_SHARD_ID) {
            Some(AttributeValue::Ss(ids)) => {
                let mut ids = ids.clone();
                ids.sort();
                ids
            }
            _ => Vec::new(),
        };
        Ok(Self {
            key,
            owner: string(LEASE_OWNER)?,
            counter: number(LEASE_COUNTER)?.unwrap_or(0),
            checkpoint: Checkpoint::from_kcl(&checkpoint_text, subsequence)?,
            owner_switches_since_checkpoint: number(OWNER_SWITCHES)?.unwrap_or(0),
            parent_shard_ids,
        })
    }

    /// The item to write for a new lease.
    pub fn to_item(&self) -> HashMap<String, AttributeValue> {
        let (checkpoint, subsequence) = self.checkpoint.to_kcl();
        let mut item = HashMap::from([
            (LEASE_KEY.to_string(), AttributeValue::S(self.key.clone())),
            (LEASE_COUNTER.to_string(), AttributeValue::N(self.counter.to_string())),
            (CHECKPOINT.to_string(), AttributeValue::S(checkpoint)),
            (
                CHECKPOINT_SUBSEQUENCE.to_string(),
                AttributeValue::N(subsequence.to_string()),
            ),
            (
                OWNER_SWITCHES.to_string(),
                AttributeValue::N(self.owner_switches_since_checkpoint.to_string()),
            ),
        ]);
        if let Some(owner) = &self.owner {
            item.insert(LEASE_OWNER.to_string(), AttributeValue::S(owner.clone()));
        }
        if !self.parent_shard_ids.is_empty() {
            item.insert(
                PARENT_SHARD_ID.to_string(),
                AttributeValue::Ss(self.parent_shard_ids.clone()),
            );
        }
        item
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::position::{RecordPosition, SequenceNumber};

    #[test]
    fn a_lease_round_trips_through_an_item() {
        let lease = Lease {
            key: "shardId-000000000002".into(),
            owner: Some("worker-a".into()),
            counter: 42,
            checkpoint: Checkpoint::At(RecordPosition {
                sequence: SequenceNumber::parse("49590338271490256608559692538361571095921575989136588898")
                    .expect("digits"),
                subsequence: 3,
            }),
            owner_switches_since_checkpoint: 1,
            parent_shard_ids: vec!["shardId-000000000000".into(), "shardId-000000000001".into()],
        };
        assert_eq!(Lease::from_item(&lease.to_item()), Ok(lease));
    }

    #[test]
    fn a_java_kcl_item_reads() {
        // As the Java KCL 2.x writes a fresh, unowned lease.
        let item = HashMap::from([
            ("leaseKey".to_string(), AttributeValue::S("shardId-000000000000".into())),
            ("leaseCounter".to_string(), AttributeValue::N("0".into())),
            ("checkpoint".to_string(), AttributeValue::S("TRIM_HORIZON".into())),
            ("checkpointSubSequenceNumber".to_string(), AttributeValue::N("0".into())),
            (
                "ownerSwitchesSinceCheckpoint".to_string(),
                AttributeValue::N("0".into()),
            ),
        ]);
        let lease = Lease::from_item(&item).expect("valid");
        assert_eq!(lease.owner, None);
        assert_eq!(lease.checkpoint, Checkpoint::TrimHorizon);
        assert!(lease.parent_shard_ids.is_empty());
    }

    #[test]
    fn malformed_items_are_typed_errors() {
        let item = HashMap::from([("leaseCounter".to_string(), AttributeValue::N("x".into()))]);
        assert_eq!(Lease::from_item(&item), Err(LeaseFormatError::Missing("leaseKey")));
        let item = HashMap::from([
            ("leaseKey".to_string(), AttributeValue::S("s".into())),
            ("leaseCounter".to_string(), AttributeValue::N("x".into())),
        ]);
        assert_eq!(
            Lease::from_item(&item),
            Err(LeaseFormatError::NotANumber("leaseCounter"))
        );
    }
}
