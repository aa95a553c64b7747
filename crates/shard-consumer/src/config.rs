//! Settings of a consumer.

use std::time::Duration;

/// GetRecords allows 5 calls per second per shard, shared by every consumer of the
/// stream: 1 s / 5 = 200 ms is the shortest sane pause between two reads.
pub const MIN_IDLE_BETWEEN_READS: Duration = Duration::from_millis(200);

/// Where a shard without a checkpoint starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitialPosition {
    TrimHorizon,
    Latest,
    /// Milliseconds since the epoch.
    AtTimestamp(i64),
}

/// How a consumer behaves. Start from [`ConsumerConfig::new`] and change fields.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// The lease application (for logs and metrics).
    pub application: String,
    /// This worker's id in `leaseOwner`; unique per process.
    pub worker_id: String,
    /// A worker whose heartbeat stands still this long has lost its leases.
    pub failover: Duration,
    /// How often this worker's heartbeat is written, keeping all its leases (default failover / 3).
    pub renewal_interval: Duration,
    /// How often the worker table is read, to hand over, take or ask for leases; the
    /// lease table is scanned only when something may have changed (default failover / 2).
    pub taker_interval: Duration,
    /// How often shards are listed to find new ones (also done at start and SHARD_END).
    pub shard_sync_interval: Duration,
    pub max_leases_per_worker: usize,
    pub max_leases_to_steal: usize,
    /// Pause between two reads of one shard (at least 200 ms).
    pub idle_between_reads: Duration,
    pub max_records_per_read: i32,
    pub initial_position: InitialPosition,
    /// Create the lease table when it is missing (else a missing table is fatal).
    pub create_lease_table: bool,
}

/// A setting out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid consumer setting: {0}")]
pub struct ConfigError(pub String);

impl ConsumerConfig {
    /// The defaults: failover 10 s, renewal every 3.3 s, up to 10 leases asked of busier workers at a time, 1 s between reads.
    pub fn new(application: &str, worker_id: &str) -> Self {
        let failover = Duration::from_secs(10);
        Self {
            application: application.to_string(),
            worker_id: worker_id.to_string(),
            failover,
            renewal_interval: failover / 3,
            taker_interval: failover / 2,
            shard_sync_interval: Duration::from_secs(60),
            max_leases_per_worker: usize::MAX,
            max_leases_to_steal: 10,
            idle_between_reads: Duration::from_secs(1),
            max_records_per_read: 10_000,
            initial_position: InitialPosition::TrimHorizon,
            create_lease_table: true,
        }
    }

    /// Sets the failover time and the intervals derived from it.
    pub fn with_failover(mut self, failover: Duration) -> Self {
        self.failover = failover;
        self.renewal_interval = failover / 3;
        self.taker_interval = failover / 2;
        self
    }

    /// Checks the settings against each other.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.worker_id.is_empty() {
            return Err(ConfigError("worker id is empty".into()));
        }
        if self.idle_between_reads < MIN_IDLE_BETWEEN_READS {
            return Err(ConfigError(format!(
                "idle time between reads {:?} is under {MIN_IDLE_BETWEEN_READS:?} (5 GetRecords/s per shard)",
                self.idle_between_reads
            )));
        }
        if self.renewal_interval.is_zero() || self.renewal_interval * 2 > self.failover {
            return Err(ConfigError(format!(
                "renewal interval {:?} must be positive and at most half the failover time {:?}",
                self.renewal_interval, self.failover
            )));
        }
        if self.taker_interval.is_zero() || self.max_leases_per_worker == 0 || self.max_leases_to_steal == 0 {
            return Err(ConfigError(
                "taker interval, max leases and max steals must be positive".into(),
            ));
        }
        if self.max_records_per_read < 1 {
            return Err(ConfigError("max records per read must be positive".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_follow_the_failover_time() {
        let config = ConsumerConfig::new("app", "w1");
        config.validate().expect("valid");
        assert_eq!(config.renewal_interval, Duration::from_secs(10) / 3);
        let config = config.with_failover(Duration::from_secs(3));
        assert_eq!(config.renewal_interval, Duration::from_secs(1));
        config.validate().expect("valid");
    }

    #[test]
    fn reads_faster_than_five_per_second_are_refused() {
        let mut config = ConsumerConfig::new("app", "w1");
        config.idle_between_reads = Duration::from_millis(100);
        assert!(config.validate().is_err());
    }
}
