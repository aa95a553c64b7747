//! The corrections (the drift, each level set to its recount) and the transactions
//! that write them. Each
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

use aws_sdk_dynamodb::Client;
use live_state::drift::Drift;
use pipeline_runtime::{AwsError, Classified, ErrorKind, RetryError, RetryPolicy, retry};
use shard_consumer::SequenceNumber;
use tokio_util::sync::CancellationToken;

use crate::aws::level_state::{self, CountUpdate, GuardCheck, TransactionError};

pub use live_state::level_state::MAX_TRANSACTION_ITEMS;

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

impl From<TransactionError> for WriteError {
    fn from(error: TransactionError) -> Self {
        match error {
            TransactionError::ConditionFailed => WriteError::Moved,
            TransactionError::Aws(error) => WriteError::Aws(error),
        }
    }
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

/// `corrections` cut into transactions that each leave room for `guards` checks. Only
/// with 100 or more guards that may move (open stream shards) is there no room at all.
pub fn chunks(corrections: &[Drift], guards: usize) -> Result<std::slice::Chunks<'_, Drift>, WriteError> {
    let room = MAX_TRANSACTION_ITEMS.saturating_sub(guards);
    if room == 0 {
        return Err(WriteError::TooManyShards { guards });
    }
    Ok(corrections.chunks(room))
}

/// Sets each drifted level's count (as read: `level_state`) to its recount
/// (`player_state`), in as few transactions as fit, each conditioned on each guard in
/// `guards` (those that may still move) and on each of its levels' counts. A throttled
/// or passing failure of a transaction is tried again; one whose answer was lost then
/// fails its condition (its own write moved the counts), which is [`WriteError::Moved`]
/// like any other move. `on_commit` hears of each transaction once it committed (an
/// error leaves those before it written).
pub async fn write(
    dynamodb: &Client,
    level_table: &str,
    transitions_table: &str,
    guards: &[(String, Option<SequenceNumber>)],
    corrections: &[Drift],
    on_commit: &(dyn Fn(&[Drift]) + Send + Sync),
) -> Result<(), WriteError> {
    let checks: Vec<GuardCheck<'_>> = guards
        .iter()
        .map(|(shard_id, last)| GuardCheck {
            shard_id,
            last: last.as_ref().map(SequenceNumber::as_str),
        })
        .collect();
    let never = CancellationToken::new();
    for chunk in chunks(corrections, checks.len())? {
        let updates: Vec<CountUpdate<'_>> = chunk
            .iter()
            .map(|d| CountUpdate {
                level_id: &d.level_id,
                read: d.level_state,
                target: d.player_state,
            })
            .collect();
        retry(&RetryPolicy::COMMAND, &never, || async {
            level_state::set_counts(dynamodb, level_table, transitions_table, &checks, &updates)
                .await
                .map_err(WriteError::from)
        })
        .await
        .map_err(RetryError::into_error)?;
        on_commit(chunk);
    }
    Ok(())
}

/// Corrections as text, each line starting with `verb` ("corrected" as a transaction
/// commits, "would set" for `--dry-run`).
pub fn render(corrections: &[Drift], verb: &str) -> String {
    corrections
        .iter()
        .map(|d| {
            format!(
                "{verb} {} playerCount {} -> {} ({:+})\n",
                d.level_id,
                d.level_state,
                d.player_state,
                d.player_state - d.level_state
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use live_state::drift;
    use live_state::level_state::LevelCount;

    use super::*;

    fn level(id: &str, count: i64) -> LevelCount {
        LevelCount {
            level_id: id.into(),
            player_count: count,
        }
    }

    fn correction(level_id: &str, read: i64, target: i64) -> Drift {
        Drift {
            level_id: level_id.into(),
            level_state: read,
            player_state: target,
        }
    }

    #[test]
    fn the_corrections_set_each_drifted_level_to_its_recount_and_nothing_else() {
        let recount = BTreeMap::from([("a".to_string(), 3), ("b".to_string(), 1), ("c".to_string(), 2)]);
        let levels = [level("a", 3), level("b", 4), level("d", 1), level("e", 0)];
        assert_eq!(
            drift::drift(&levels, &recount),
            [correction("b", 4, 1), correction("c", 0, 2), correction("d", 1, 0)]
        );
        assert!(drift::drift(&[level("a", 3), level("z", 0)], &BTreeMap::from([("a".to_string(), 3)])).is_empty());
    }

    #[test]
    fn every_transaction_leaves_room_for_the_guards() {
        let corrections: Vec<Drift> = (0..150).map(|i| correction(&format!("l{i}"), 1, 0)).collect();
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
        let text = render(&[correction("level-b", 4, 1)], "would set");
        assert_eq!(text, "would set level-b playerCount 4 -> 1 (-3)\n");
        let text = render(&[correction("level-b", 4, 1)], "corrected");
        assert_eq!(text, "corrected level-b playerCount 4 -> 1 (-3)\n");
    }
}
