//! Where LevelState is not the recount of PlayerState, read-only. While a game runs the
//! two tables are read at different moments and the level stage trails PlayerState by
//! its stream's lag, so [`check`] counts a level as drifted only when every one of
//! several reads, apart, finds it off: a report to act on, never a correction to write
//! (`pipelinectl reconcile-levels` writes those under a protocol of its own).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use pipeline_runtime::AwsError;

use crate::level_state::{self, LevelCount};
use crate::player_state;

/// A level whose LevelState count is not the number of its players in PlayerState.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    pub level_id: String,
    pub level_state: i64,
    pub player_state: i64,
}

impl Drift {
    /// LevelState minus the recount: positive when LevelState counts too many.
    pub fn signed(&self) -> i64 {
        self.level_state - self.player_state
    }
}

/// What a drift amounts to, as the `LevelDrift` metrics report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DriftSummary {
    /// Levels whose count is off.
    pub levels: u64,
    /// The sum over levels of |LevelState - recount|: players miscounted.
    pub players: u64,
}

/// The summary of `drift`.
pub fn summary(drift: &[Drift]) -> DriftSummary {
    DriftSummary {
        levels: drift.len() as u64,
        players: drift.iter().map(|d| d.signed().unsigned_abs()).sum(),
    }
}

/// The levels where `levels` (LevelState) and `recount` (PlayerState) disagree; a level
/// missing on one side counts as 0 there.
pub fn drift(levels: &[LevelCount], recount: &BTreeMap<String, i64>) -> Vec<Drift> {
    let counted: BTreeMap<&str, i64> = levels.iter().map(|l| (l.level_id.as_str(), l.player_count)).collect();
    let ids: BTreeSet<&str> = counted
        .keys()
        .copied()
        .chain(recount.keys().map(String::as_str))
        .collect();
    ids.into_iter()
        .filter_map(|id| {
            let (level_state, player_state) = (
                counted.get(id).copied().unwrap_or(0),
                recount.get(id).copied().unwrap_or(0),
            );
            (level_state != player_state).then(|| Drift {
                level_id: id.to_string(),
                level_state,
                player_state,
            })
        })
        .collect()
}

/// How patiently [`check`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckSettings {
    /// Reads before a level counts as drifted: it must be off in every one (at least 1).
    pub reads: u32,
    /// Time between two reads: longer than the level stage's lag behind PlayerState.
    pub interval: Duration,
}

/// The drift of the last read, for the levels that drifted in every read; stops
/// reading as soon as one read finds none.
pub async fn check(
    dynamodb: &Client,
    player_state_table: &str,
    level_state_table: &str,
    settings: CheckSettings,
) -> Result<Vec<Drift>, AwsError> {
    let mut persistent: Option<BTreeSet<String>> = None;
    let mut last = Vec::new();
    for read in 0..settings.reads.max(1) {
        if read > 0 {
            tokio::time::sleep(settings.interval).await;
        }
        let levels = level_state::read_counts(dynamodb, level_state_table).await?;
        let recount = player_state::count_by_level(dynamodb, player_state_table).await?;
        last = drift(&levels, &recount);
        let drifted: BTreeSet<String> = last.iter().map(|d| d.level_id.clone()).collect();
        let still = match persistent {
            Some(before) => before.intersection(&drifted).cloned().collect(),
            None => drifted,
        };
        if still.is_empty() {
            return Ok(Vec::new());
        }
        persistent = Some(still);
    }
    let persistent = persistent.unwrap_or_default();
    last.retain(|d| persistent.contains(&d.level_id));
    Ok(last)
}

/// The drift as a text table, or a line saying there is none.
pub fn render(drift: &[Drift]) -> String {
    if drift.is_empty() {
        return "LevelState equals the recount of PlayerState on every level\n".to_string();
    }
    let width = drift.iter().map(|d| d.level_id.len()).max().unwrap_or(0).max(5);
    let mut out = format!(
        "{:<width$}  {:>11}  {:>12}  {:>6}\n",
        "level", "LevelState", "PlayerState", "drift"
    );
    for d in drift {
        out.push_str(&format!(
            "{:<width$}  {:>11}  {:>12}  {:>+6}\n",
            d.level_id,
            d.level_state,
            d.player_state,
            d.signed()
        ));
    }
    out
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
    fn drift_is_every_level_where_the_count_is_not_the_recount() {
        let recount = BTreeMap::from([("a".to_string(), 3), ("b".to_string(), 1), ("c".to_string(), 2)]);
        let levels = [level("a", 3), level("b", 4), level("d", 1)];
        let found = drift(&levels, &recount);
        assert_eq!(
            found,
            [
                Drift {
                    level_id: "b".into(),
                    level_state: 4,
                    player_state: 1
                },
                Drift {
                    level_id: "c".into(),
                    level_state: 0,
                    player_state: 2
                },
                Drift {
                    level_id: "d".into(),
                    level_state: 1,
                    player_state: 0
                },
            ]
        );
        assert_eq!(summary(&found), DriftSummary { levels: 3, players: 6 });
        assert!(drift(&[level("a", 3)], &BTreeMap::from([("a".to_string(), 3)])).is_empty());
        assert_eq!(summary(&[]), DriftSummary::default());
    }

    #[test]
    fn the_report_shows_the_signed_drift() {
        let text = render(&[Drift {
            level_id: "level-01".into(),
            level_state: 4,
            player_state: 1,
        }]);
        assert!(text.lines().nth(1).is_some_and(|l| l.ends_with("+3")), "{text}");
        assert!(render(&[]).starts_with("LevelState equals"));
    }
}
