//! The maintenance jobs and their schedules.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use croner::Cron;
use warehouse::Maintenance;

/// A cron schedule (5 fields, or 6 with seconds first), or `off`.
#[derive(Debug, Clone)]
pub struct Schedule(Option<Cron>);

impl Schedule {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.trim().eq_ignore_ascii_case("off") {
            return Ok(Self(None));
        }
        Cron::from_str(text)
            .map(|cron| Self(Some(cron)))
            .map_err(|e| format!("not a cron expression: {e}"))
    }

    /// The first run strictly after `after`; `None` when off.
    pub fn next_after(&self, after: &DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.0.as_ref()?.find_next_occurrence(after, false).ok()
    }
}

/// What a job does.
#[derive(Debug, Clone)]
pub enum Work {
    /// Statements on the warehouse.
    Warehouse(Maintenance),
    /// LevelState compared with the recount of PlayerState (read-only); the drift is
    /// published as the `LevelDriftLevels` and `LevelDriftPlayers` metrics.
    LevelDrift {
        player_state_table: String,
        level_state_table: String,
        settings: live_state::drift::CheckSettings,
    },
}

impl Work {
    /// Whether a fatal failure of this work stops the service. A warehouse job that
    /// cannot run means the warehouse is unfit for every job (its rights, its schema);
    /// the level-drift check only reads live state, and a denied or missing table there
    /// must not stop VACUUM and retention: it counts as a failed run, and is logged.
    pub fn fatal_stops_service(&self) -> bool {
        match self {
            Work::Warehouse(_) => true,
            Work::LevelDrift { .. } => false,
        }
    }
}

/// A named job on a schedule.
#[derive(Debug, Clone)]
pub struct Job {
    pub name: &'static str,
    pub schedule: Schedule,
    pub work: Work,
}

/// The jobs due in `(after, now]`, and when the next one is due after `now`.
pub fn due(jobs: &[Job], after: &DateTime<Utc>, now: &DateTime<Utc>) -> (Vec<Job>, Option<DateTime<Utc>>) {
    let due = jobs
        .iter()
        .filter(|job| job.schedule.next_after(after).is_some_and(|at| at <= *now))
        .cloned()
        .collect();
    let next = jobs.iter().filter_map(|job| job.schedule.next_after(now)).min();
    (due, next)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn job(name: &'static str, schedule: &str) -> Job {
        Job {
            name,
            schedule: Schedule::parse(schedule).expect("schedule"),
            work: Work::Warehouse(Maintenance::Analyze),
        }
    }

    #[test]
    fn only_a_warehouse_job_stops_the_service_when_it_cannot_run() {
        assert!(Work::Warehouse(Maintenance::Vacuum).fatal_stops_service());
        let drift = Work::LevelDrift {
            player_state_table: "PlayerState".into(),
            level_state_table: "LevelState".into(),
            settings: live_state::drift::CheckSettings {
                reads: 1,
                interval: std::time::Duration::ZERO,
            },
        };
        assert!(!drift.fatal_stops_service());
    }

    #[test]
    fn schedules_fire_once_per_occurrence() {
        let jobs = [
            job("vacuum", "0 3 * * *"),
            job("analyze", "30 3 * * *"),
            job("never", "off"),
        ];
        let at = |h: u32, m: u32, s: u32| Utc.with_ymd_and_hms(2026, 1, 1, h, m, s).single().expect("time");
        let (due_now, next) = due(&jobs, &at(2, 59, 0), &at(3, 0, 0));
        assert_eq!(due_now.iter().map(|j| j.name).collect::<Vec<_>>(), vec!["vacuum"]);
        assert_eq!(next, Some(at(3, 30, 0)));
        let (due_now, _) = due(&jobs, &at(3, 0, 0), &at(3, 29, 59));
        assert!(due_now.is_empty(), "nothing fires twice or early");
        assert!(Schedule::parse("every day").is_err());
        assert!(Schedule::parse("*/5 * * * * *").is_ok(), "seconds are allowed");
    }
}
