//! The consumer's settings as env vars and flags, shared by every service that reads a stream.
//!
//! One set per process: a service with several consumers (the player-state worker's
//! stages) gives each its own lease application and table, and the same pacing.

use std::time::Duration;

use clap::Args;

use crate::config::{ConsumerConfig, InitialPosition};

/// Lease and read settings of a stream consumer.
#[derive(Debug, Clone, Args)]
pub struct ConsumerArgs {
    /// Seconds a worker's heartbeat may stand still before others take its leases; the
    /// heartbeat is written every third of it. Lower means faster takeover after a
    /// crash and more DynamoDB traffic (a graceful stop hands its leases over at once).
    #[arg(long, env = "LEASE_FAILOVER_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(3..=600))]
    pub lease_failover_secs: u64,

    /// Most shard leases one worker holds (0 = no limit).
    #[arg(long, env = "MAX_LEASES_PER_WORKER", default_value_t = 0)]
    pub max_leases_per_worker: usize,

    /// Most leases asked of busier workers in one pass, one per worker (KCL's
    /// maxLeasesToStealAtOneTime, whose default is 1): the holder checkpoints and hands
    /// each over, so asking several at once costs no duplicate reads.
    #[arg(long, env = "MAX_LEASES_TO_STEAL", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=100))]
    pub max_leases_to_steal: u64,

    /// Milliseconds between two reads of one shard, at least 200: a shard serves 5
    /// GetRecords per second to all of the stream's consumers together.
    #[arg(long, env = "IDLE_BETWEEN_READS_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(200..=60_000))]
    pub idle_between_reads_ms: u64,

    /// Most records one GetRecords call returns (1..=10000; DynamoDB Streams caps it at 1000).
    #[arg(long, env = "MAX_RECORDS_PER_READ", default_value_t = 10_000,
          value_parser = clap::value_parser!(i64).range(1..=10_000))]
    pub max_records_per_read: i64,

    /// Seconds between two listings of the stream's shards (they are also listed at start and at each shard's end).
    #[arg(long, env = "SHARD_SYNC_INTERVAL_SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub shard_sync_interval_secs: u64,

    /// Where a shard without a checkpoint starts: `TRIM_HORIZON` (oldest record), `LATEST`
    /// (only new records) or `AT_TIMESTAMP:<milliseconds since the epoch>`.
    #[arg(long, env = "INITIAL_POSITION", default_value = "TRIM_HORIZON", value_parser = parse_initial_position)]
    pub initial_position: InitialPosition,

    /// Create a missing lease table and its worker table (`<lease table>-workers`) at
    /// start (needs `dynamodb:CreateTable`). Set `false`
    /// where the templates create the tables and the task roles may not: a missing
    /// table then stops the service at start with its name.
    #[arg(long, env = "CREATE_LEASE_TABLES", default_value_t = true, action = clap::ArgAction::Set)]
    pub create_lease_tables: bool,

    /// This worker's name in the lease table's `leaseOwner`, unique per process
    /// (default: the host name, the process id and a random suffix).
    #[arg(long, env = "WORKER_ID")]
    pub worker_id: Option<String>,
}

impl ConsumerArgs {
    /// The consumer settings for one lease application.
    pub fn config(&self, application: &str) -> ConsumerConfig {
        let worker_id = self.worker_id.clone().unwrap_or_else(default_worker_id);
        let mut config =
            ConsumerConfig::new(application, &worker_id).with_failover(Duration::from_secs(self.lease_failover_secs));
        config.max_leases_per_worker = match self.max_leases_per_worker {
            0 => usize::MAX,
            n => n,
        };
        config.max_leases_to_steal = usize::try_from(self.max_leases_to_steal).unwrap_or(10);
        config.idle_between_reads = Duration::from_millis(self.idle_between_reads_ms);
        config.max_records_per_read = i32::try_from(self.max_records_per_read).unwrap_or(10_000);
        config.shard_sync_interval = Duration::from_secs(self.shard_sync_interval_secs);
        config.initial_position = self.initial_position;
        config.create_lease_table = self.create_lease_tables;
        config
    }
}

/// Host name (the task id on ECS), process id and a random suffix, so two processes
/// on one host, or a restarted one, never share an owner name.
pub fn default_worker_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".to_string());
    format!("{host}-{}-{:04x}", std::process::id(), fastrand::u16(..))
}

/// `TRIM_HORIZON`, `LATEST` or `AT_TIMESTAMP:<ms>`.
pub fn parse_initial_position(value: &str) -> Result<InitialPosition, String> {
    match value {
        "TRIM_HORIZON" => Ok(InitialPosition::TrimHorizon),
        "LATEST" => Ok(InitialPosition::Latest),
        other => match other.strip_prefix("AT_TIMESTAMP:") {
            Some(ms) => ms
                .parse::<i64>()
                .ok()
                .filter(|ms| *ms >= 0)
                .map(InitialPosition::AtTimestamp)
                .ok_or_else(|| format!("{ms:?} is not a number of milliseconds since the epoch")),
            None => Err("expected TRIM_HORIZON, LATEST or AT_TIMESTAMP:<milliseconds since the epoch>".into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Settings {
        #[command(flatten)]
        consumer: ConsumerArgs,
    }

    #[test]
    fn defaults_give_the_documented_consumer() {
        let settings = Settings::try_parse_from(["x"]).expect("defaults parse");
        let config = settings.consumer.config("app");
        config.validate().expect("valid");
        assert_eq!(config.failover, Duration::from_secs(10));
        assert_eq!(config.idle_between_reads, Duration::from_secs(1));
        assert_eq!(config.max_leases_to_steal, 10);
        assert_eq!(config.max_leases_per_worker, usize::MAX);
        assert_eq!(config.initial_position, InitialPosition::TrimHorizon);
        assert!(!config.worker_id.is_empty());
    }

    #[test]
    fn flags_reach_the_config() {
        let settings = Settings::try_parse_from([
            "x",
            "--lease-failover-secs=6",
            "--max-leases-per-worker=4",
            "--idle-between-reads-ms=250",
            "--initial-position=AT_TIMESTAMP:1700000000000",
            "--worker-id=w7",
        ])
        .expect("parse");
        let config = settings.consumer.config("app");
        assert_eq!(config.renewal_interval, Duration::from_secs(2));
        assert_eq!(config.max_leases_per_worker, 4);
        assert_eq!(config.idle_between_reads, Duration::from_millis(250));
        assert_eq!(config.initial_position, InitialPosition::AtTimestamp(1_700_000_000_000));
        assert_eq!(config.worker_id, "w7");
        config.validate().expect("valid");
    }

    #[test]
    fn reads_faster_than_five_per_second_fail_at_parse() {
        assert!(Settings::try_parse_from(["x", "--idle-between-reads-ms=100"]).is_err());
        assert!(Settings::try_parse_from(["x", "--initial-position=NOW"]).is_err());
        assert!(Settings::try_parse_from(["x", "--initial-position=AT_TIMESTAMP:soon"]).is_err());
    }

    #[test]
    fn worker_ids_differ_between_calls() {
        let ids: std::collections::HashSet<String> = (0..20).map(|_| default_worker_id()).collect();
        assert!(ids.len() > 1);
    }
}
