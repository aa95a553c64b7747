//! `pipelinectl reconcile-levels --check`: whether LevelState still equals the recount
//! of PlayerState, level by level. While a game runs the two are read at different
//! moments and the level stage trails PlayerState by its stream's lag, so a level
//! counts as drifted only when every one of several reads, apart, finds it off.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use clap::Args;
use live_state::level_state::{self, LevelCount};
use live_state::player_state;
use pipeline_runtime::AwsError;
use pipeline_runtime::config::parse_resource_name;

/// What `reconcile-levels` compares, and how patiently.
#[derive(Debug, Clone, Args)]
pub struct ReconcileArgs {
    /// DynamoDB table with each present player's level (the truth LevelState is a count of).
    #[arg(long, env = "PLAYER_STATE_TABLE", default_value = "PlayerState", value_parser = parse_resource_name)]
    pub player_state_table: String,

    /// DynamoDB table with the player count of each level.
    #[arg(long, env = "LEVEL_STATE_TABLE", default_value = "LevelState", value_parser = parse_resource_name)]
    pub level_state_table: String,

    /// Only report the drift (exit 1 when there is some). The only mode so far: writing
    /// corrections while the level stage runs is not built yet, and is refused.
    #[arg(long, env = "RECONCILE_CHECK", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub check: bool,

    /// Reads before a level counts as drifted: it must be off in every one.
    #[arg(long, env = "RECONCILE_READS", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub reads: u32,

    /// Seconds between two reads: longer than the level stage's lag behind PlayerState.
    #[arg(long, env = "RECONCILE_INTERVAL_SECS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub interval_secs: u64,
}

/// A level whose LevelState count is not the number of its players in PlayerState.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    pub level_id: String,
    pub level_state: i64,
    pub player_state: i64,
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

/// The drift of the last read, for the levels that drifted in every read; stops
/// reading as soon as one read finds none.
pub async fn check(dynamodb: &aws_sdk_dynamodb::Client, args: &ReconcileArgs) -> Result<Vec<Drift>, AwsError> {
    let mut persistent: Option<BTreeSet<String>> = None;
    let mut last = Vec::new();
    for read in 0..args.reads {
        if read > 0 {
            tokio::time::sleep(Duration::from_secs(args.interval_secs)).await;
        }
        let levels = level_state::read_counts(dynamodb, &args.level_state_table).await?;
        let recount = player_state::count_by_level(dynamodb, &args.player_state_table).await?;
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
            d.level_state - d.player_state
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
        assert_eq!(
            drift(&levels, &recount),
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
        assert!(drift(&[level("a", 3)], &BTreeMap::from([("a".to_string(), 3)])).is_empty());
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
