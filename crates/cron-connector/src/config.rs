//! The cron-connector's settings, and the jobs they schedule.

use clap::Parser;
use pipeline_runtime::config::parse_resource_name;
use pipeline_runtime::{AwsArgs, ServiceArgs};
use warehouse::{Maintenance, WarehouseArgs};

use crate::jobs::{Job, Schedule, Work};

fn schedule(text: &str) -> Result<Schedule, String> {
    Schedule::parse(text)
}

/// Settings of the cron-connector.
#[derive(Debug, Clone, Parser)]
#[command(name = crate::SERVICE, version, about = "Scheduled warehouse maintenance, one instance at a time")]
pub struct Config {
    /// DynamoDB lease table holding the singleton lease (created if missing).
    #[arg(long = "cron-connector-lease-table", env = "CRON_CONNECTOR_LEASE_TABLE", default_value = "cron-connector", value_parser = parse_resource_name)]
    pub lease_table: String,

    /// When to VACUUM the events table (cron, UTC; 5 fields or 6 with seconds; `off`).
    #[arg(long, env = "CRON_VACUUM", default_value = "0 3 * * *", value_parser = schedule)]
    pub cron_vacuum: Schedule,

    /// When to ANALYZE the tables.
    #[arg(long, env = "CRON_ANALYZE", default_value = "30 3 * * *", value_parser = schedule)]
    pub cron_analyze: Schedule,

    /// When to forget loaded files older than LOADED_FILES_RETENTION_DAYS.
    #[arg(long, env = "CRON_PRUNE_LOADED_FILES", default_value = "0 4 * * *", value_parser = schedule)]
    pub cron_prune_loaded_files: Schedule,

    /// Days a loaded file is remembered: a pointer replayed later than this could load twice.
    #[arg(long, env = "LOADED_FILES_RETENTION_DAYS", default_value_t = 30,
          value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub loaded_files_retention_days: u32,

    /// When to delete events older than EVENTS_RETENTION_DAYS.
    #[arg(long, env = "CRON_RETENTION", default_value = "0 5 * * *", value_parser = schedule)]
    pub cron_retention: Schedule,

    /// Days events are kept (0: forever, the retention job does nothing).
    #[arg(long, env = "EVENTS_RETENTION_DAYS", default_value_t = 0)]
    pub events_retention_days: u32,

    /// When to compare LevelState with the recount of PlayerState and publish the drift
    /// (`LevelDriftPlayers`, `LevelDriftLevels`; `off` to never).
    #[arg(long, env = "CRON_LEVEL_DRIFT", default_value = "*/15 * * * *", value_parser = schedule)]
    pub cron_level_drift: Schedule,

    /// DynamoDB table with each present player's level, recounted by the level-drift check.
    #[arg(long, env = "PLAYER_STATE_TABLE", default_value = "PlayerState", value_parser = parse_resource_name)]
    pub player_state_table: String,

    /// DynamoDB table with the player count of each level, compared by the level-drift check.
    #[arg(long, env = "LEVEL_STATE_TABLE", default_value = "LevelState", value_parser = parse_resource_name)]
    pub level_state_table: String,

    #[command(flatten)]
    pub drift_check: live_state::drift::CheckArgs,

    /// Seconds the singleton lease may go unrenewed before another instance takes it.
    #[arg(long, env = "LEASE_FAILOVER_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(3..=600))]
    pub lease_failover_secs: u64,

    /// This instance's name in the lease table (default: host name, pid, random suffix).
    #[arg(long, env = "WORKER_ID")]
    pub worker_id: Option<String>,

    /// Create the lease table at start when it is missing (needs `dynamodb:CreateTable`);
    /// `false` where the templates create it: a missing table then stops the service.
    #[arg(long, env = "CREATE_LEASE_TABLES", default_value_t = true, action = clap::ArgAction::Set)]
    pub create_lease_tables: bool,

    #[command(flatten)]
    pub warehouse: WarehouseArgs,

    #[command(flatten)]
    pub service: ServiceArgs,

    #[command(flatten)]
    pub aws: AwsArgs,
}

impl Config {
    pub fn jobs(&self) -> Vec<Job> {
        let mut jobs = vec![
            Job {
                name: "vacuum",
                schedule: self.cron_vacuum.clone(),
                work: Work::Warehouse(Maintenance::Vacuum),
            },
            Job {
                name: "analyze",
                schedule: self.cron_analyze.clone(),
                work: Work::Warehouse(Maintenance::Analyze),
            },
            Job {
                name: "prune_loaded_files",
                schedule: self.cron_prune_loaded_files.clone(),
                work: Work::Warehouse(Maintenance::PruneLoadedFiles {
                    days: self.loaded_files_retention_days,
                }),
            },
            Job {
                name: "level_drift",
                schedule: self.cron_level_drift.clone(),
                work: Work::LevelDrift {
                    player_state_table: self.player_state_table.clone(),
                    level_state_table: self.level_state_table.clone(),
                    settings: self.drift_check.settings(),
                },
            },
        ];
        if self.events_retention_days > 0 {
            jobs.push(Job {
                name: "retention",
                schedule: self.cron_retention.clone(),
                work: Work::Warehouse(Maintenance::Retention {
                    days: self.events_retention_days,
                }),
            });
        }
        jobs
    }
}
