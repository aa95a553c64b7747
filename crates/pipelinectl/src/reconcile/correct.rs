//! The corrections: the plan (pure), and the transactions that write it. Each
//! transaction sets some drifted levels' counts on the condition that each of those
//! counts still holds what was read, and checks that each guard the level stage may
//! still move (an open stream shard's) still holds what was read: a change the level
//! stage applied since then fails the transaction, so no transaction lands on a
//! LevelState other than the one it was computed against. Counts of levels that did
//! not drift are neither written nor conditioned on.
//!
//! A correction of more levels than one transaction holds ([`MAX_TRANSACTION_ITEMS`]
//! less the guards) is written in several transactions, one after the other, each
//! exact on its own; they are not atomic together. One that fails its condition leaves
//! the earlier ones written (exact, since each was), and the next round corrects what
//! is left; a deadline or a signal between two of them leaves the correction partly
//! applied, and running the command again finishes it.

use std::collections::BTreeMap;

use aws_sdk_dynamodb::Client;
use live_state::drift::{self, Drift};
use live_state::level_state::LevelCount;
use pipeline_runtime::{AwsError, Classified, ErrorKind};
use shard_consumer::SequenceNumber;

use crate::aws::level_state::{self, CountUpdate, GuardCheck, TransactionError};

/// DynamoDB's limit of items per TransactWriteItems.
pub const MAX_TRANSACTION_ITEMS: usize = 100;

/// Why corrections were not written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// A guard or a count moved since it was read: read everything again.
    #[error("LevelState or a guard of the level stage changed since it was read")]
    Moved,
    #[error(
        "{guards} stream shards to condition on leave no room for a correction in a transaction of {MAX_TRANSACTION_ITEMS} items"
    )]
    TooManyShards { guards: usize },
    #[error("{}", .0.explain())]
    Aws(#[from] AwsError),
}

impl Classified for WriteError {
    fn kind(&self) -> ErrorKind {
        match self {
            WriteError::Moved => ErrorKind::ConditionFailed,
            WriteError::TooManyShards { .. } => ErrorKind::Fatal,
            WriteError::Aws(error) => error.kind,
        }
    }
}

/// One level's count set from what was read to the recount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Correction {
    pub level_id: String,
    /// The count as read (0 for a level without an item or without a count).
    pub read: i64,
    /// The recount of PlayerState.
    pub target: i64,
}

impl From<&Drift> for Correction {
    fn from(d: &Drift) -> Self {
        Self {
            level_id: d.level_id.clone(),
            read: d.level_state,
            target: d.player_state,
        }
    }
}

/// The corrections that make `levels` (every LevelState item, as read) the `recount`
/// of PlayerState: one per drifted level, nothing for a level already right.
pub fn plan(levels: &[LevelCount], recount: &BTreeMap<String, i64>) -> Vec<Correction> {
    drift::drift(levels, recount).iter().map(Correction::from).collect()
}

/// `corrections` cut into transactions that each leave room for `guards` checks. Only
/// with 100 or more guards that may move (open stream shards) is there no room at all.
pub fn chunks(corrections: &[Correction], guards: usize) -> Result<std::slice::Chunks<'_, Correction>, WriteError> {
    let room = MAX_TRANSACTION_ITEMS.saturating_sub(guards);
    if room == 0 {
        return Err(WriteError::TooManyShards { guards });
    }
    Ok(corrections.chunks(room))
}

/// Writes `corrections` in as few transactions as fit, each conditioned on each guard
/// in `guards` (those that may still move) and on each of its levels' counts; `on_commit` hears of each transaction's corrections once it committed
/// (an error leaves those before it written).
pub async fn write(
    dynamodb: &Client,
    level_table: &str,
    transitions_table: &str,
    guards: &[(String, Option<SequenceNumber>)],
    corrections: &[Correction],
    on_commit: &(dyn Fn(&[Correction]) + Send + Sync),
) -> Result<(), WriteError> {
    let checks: Vec<GuardCheck<'_>> = guards
        .iter()
        .map(|(shard_id, last)| GuardCheck {
            shard_id,
            last: last.as_ref().map(SequenceNumber::as_str),
        })
        .collect();
    for chunk in chunks(corrections, checks.len())? {
        let updates: Vec<CountUpdate<'_>> = chunk
            .iter()
            .map(|c| CountUpdate {
                level_id: &c.level_id,
                read: c.read,
                target: c.target,
            })
            .collect();
        level_state::set_counts(dynamodb, level_table, transitions_table, &checks, &updates)
            .await
            .map_err(|error| match error {
                TransactionError::ConditionFailed => WriteError::Moved,
                TransactionError::Aws(error) => WriteError::Aws(error),
            })?;
        on_commit(chunk);
    }
    Ok(())
}

/// The corrections one transaction committed, as text, for the operator watching.
pub fn render_committed(corrections: &[Correction]) -> String {
    corrections
        .iter()
        .map(|c| {
            format!(
                "corrected {} playerCount {} -> {} ({:+})\n",
                c.level_id,
                c.read,
                c.target,
                c.target - c.read
            )
        })
        .collect()
}

/// The corrections as text, for `--dry-run`.
pub fn render(corrections: &[Correction]) -> String {
    corrections
        .iter()
        .map(|c| {
            format!(
                "would set {} playerCount {} -> {} ({:+})\n",
                c.level_id,
                c.read,
                c.target,
                c.target - c.read
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(id: &str, count: i64) -> LevelCount {
        LevelCount {
            level_id: id.into(),
            player_count: count,
        }
    }

    #[test]
    fn the_plan_sets_each_drifted_level_to_its_recount_and_nothing_else() {
        let recount = BTreeMap::from([("a".to_string(), 3), ("b".to_string(), 1), ("c".to_string(), 2)]);
        let levels = [level("a", 3), level("b", 4), level("d", 1), level("e", 0)];
        assert_eq!(
            plan(&levels, &recount),
            [
                Correction {
                    level_id: "b".into(),
                    read: 4,
                    target: 1
                },
                Correction {
                    level_id: "c".into(),
                    read: 0,
                    target: 2
                },
                Correction {
                    level_id: "d".into(),
                    read: 1,
                    target: 0
                },
            ]
        );
        assert!(plan(&[level("a", 3), level("z", 0)], &BTreeMap::from([("a".to_string(), 3)])).is_empty());
    }

    #[test]
    fn every_transaction_leaves_room_for_the_guards() {
        let corrections: Vec<Correction> = (0..150)
            .map(|i| Correction {
                level_id: format!("l{i}"),
                read: 1,
                target: 0,
            })
            .collect();
        let sizes: Vec<usize> = chunks(&corrections, 4).expect("room").map(<[_]>::len).collect();
        assert_eq!(sizes, [96, 54]);
        assert!(matches!(
            chunks(&corrections, 100),
            Err(WriteError::TooManyShards { guards: 100 })
        ));
        assert_eq!(chunks(&[], 3).expect("room").count(), 0);
    }

    #[test]
    fn a_dry_run_says_what_it_would_write() {
        let text = render(&[Correction {
            level_id: "level-b".into(),
            read: 4,
            target: 1,
        }]);
        assert_eq!(text, "would set level-b playerCount 4 -> 1 (-3)\n");
        let text = render_committed(&[Correction {
            level_id: "level-b".into(),
            read: 4,
            target: 1,
        }]);
        assert_eq!(text, "corrected level-b playerCount 4 -> 1 (-3)\n");
    }
}
