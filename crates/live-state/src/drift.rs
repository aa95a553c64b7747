//! Where LevelState is not the recount of PlayerState, read-only. While a game runs the
//! two tables are read at different moments and the level stage trails PlayerState by
//! its stream's lag, so [`check`] counts a level as drifted only when every one of
//! several reads, apart, finds it off the same way (too high in each, or too low in
//! each), and reports the smallest amount it was off by: a busy level seen ahead in one
//! read and behind in the next is lag, not drift. A report to act on, never a
//! correction to write (`pipelinectl reconcile-levels` writes those under a protocol of
//! its own).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use pipeline_runtime::AwsError;
use pipeline_runtime::retry::{RetryError, RetryPolicy, retry};
use tokio_util::sync::CancellationToken;

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

/// The drift check's patience: a setting of `pipelinectl reconcile-levels --check` and
/// of the cron-connector's scheduled check, which must read drift the same way.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// Reads of the drift check: a level counts as drifted only when off, the same way,
    /// in every one (the level stage trails PlayerState by its stream's lag).
    #[arg(long, env = "RECONCILE_READS", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub reconcile_reads: u32,

    /// Seconds between two reads of the drift check: longer than the level stage's lag
    /// behind PlayerState.
    #[arg(long, env = "RECONCILE_INTERVAL_SECS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub reconcile_interval_secs: u64,
}

impl CheckArgs {
    pub fn settings(&self) -> CheckSettings {
        CheckSettings {
            reads: self.reconcile_reads,
            interval: Duration::from_secs(self.reconcile_interval_secs),
        }
    }
}

/// The levels off in every read so far (`before`; `None` before the first read) and in
/// `now`, the same way in each, each with the read where it was off by the least.
pub fn persist(before: Option<&BTreeMap<String, Drift>>, now: Vec<Drift>) -> BTreeMap<String, Drift> {
    let now = now.into_iter().map(|d| (d.level_id.clone(), d));
    let Some(before) = before else {
        return now.collect();
    };
    now.filter_map(|(id, d)| {
        let earlier = before.get(&id)?;
        if earlier.signed().signum() != d.signed().signum() {
            return None;
        }
        let least = if d.signed().unsigned_abs() < earlier.signed().unsigned_abs() {
            d
        } else {
            earlier.clone()
        };
        Some((id, least))
    })
    .collect()
}

/// The levels that drifted the same way in every read, each by the least it was off;
/// stops reading as soon as one read finds none. Each read that is throttled or fails
/// for a passing reason is tried again under `policy`, until `stop`.
pub async fn check(
    dynamodb: &Client,
    player_state_table: &str,
    level_state_table: &str,
    settings: CheckSettings,
    policy: &RetryPolicy,
    stop: &CancellationToken,
) -> Result<Vec<Drift>, AwsError> {
    let mut persistent: Option<BTreeMap<String, Drift>> = None;
    for read in 0..settings.reads.max(1) {
        if read > 0 {
            tokio::time::sleep(settings.interval).await;
        }
        let levels = retry(policy, stop, || level_state::read_counts(dynamodb, level_state_table))
            .await
            .map_err(RetryError::into_error)?;
        let recount = retry(policy, stop, || {
            player_state::count_by_level(dynamodb, player_state_table)
        })
        .await
        .map_err(RetryError::into_error)?;
        let still = persist(persistent.as_ref(), drift(&levels, &recount));
        if still.is_empty() {
            return Ok(Vec::new());
        }
        persistent = Some(still);
    }
    Ok(persistent.unwrap_or_default().into_values().collect())
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

    fn off(id: &str, level_state: i64, player_state: i64) -> Drift {
        Drift {
            level_id: id.into(),
            level_state,
            player_state,
        }
    }

    #[test]
    fn drift_persists_only_the_same_way_in_every_read_and_by_its_least() {
        let first = persist(None, vec![off("a", 5, 2), off("b", 3, 4), off("c", 1, 0)]);
        assert_eq!(first.len(), 3);
        // a: +3 then +1 (still too high): drift of 1. b: -1 then +2 (a busy level, lag
        // both ways): not drift. c: right now: not drift.
        let second = persist(Some(&first), vec![off("a", 4, 3), off("b", 6, 4), off("d", 2, 0)]);
        assert_eq!(second.into_values().collect::<Vec<_>>(), [off("a", 4, 3)]);
        let third = persist(Some(&first), vec![off("a", 9, 2)]);
        assert_eq!(third["a"], off("a", 5, 2), "the least of the reads: +3, not +7");
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
