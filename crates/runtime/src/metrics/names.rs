//! Every metric the services emit: its name, who emits it and the dimensions it has.
//!
//! Call sites name metrics and dimensions with these constants, and
//! `tests/tests/templates.rs` checks every metric of the dashboards and alarms in
//! `infra/` against [`CATALOGUE`]: a graph or alarm on a metric nobody writes stays
//! empty, and an alarm on it that treats missing data as breaching never clears.
//! [`Metrics`](super::Metrics) refuses, in debug builds, anything not listed for its
//! service, so every test that runs a service or a consumer checks the list.
//!
//! Every metric also has the `Service` dimension (the emitting service's name), which
//! the sets below leave out.

/// Dimension names.
pub mod dimension {
    /// The emitting service; on every metric.
    pub const SERVICE: &str = "Service";
    /// The lease application of a shard consumer (one service can run several).
    pub const APPLICATION: &str = "Application";
    pub const SHARD: &str = "Shard";
    /// Why a record was rejected or skipped.
    pub const REASON: &str = "Reason";
    pub const NORMALIZATION: &str = "Normalization";
    /// The write that failed for good.
    pub const OPERATION: &str = "Operation";
    /// The error kind of a failed load.
    pub const KIND: &str = "Kind";
    pub const JOB: &str = "Job";
    /// `success` or `failure`.
    pub const OUTCOME: &str = "Outcome";
    pub const LEVEL: &str = "Level";
}

use dimension::{APPLICATION, JOB, KIND, LEVEL, NORMALIZATION, OPERATION, OUTCOME, REASON, SHARD};

// Every service.
/// 1 from the start of the process; its absence is a service down.
pub const UP: &str = "Up";

// Shard consumers (`shard-consumer`), each with its `Application`.
pub const RECORDS_READ: &str = "RecordsRead";
pub const BYTES_READ: &str = "BytesRead";
pub const MILLIS_BEHIND_LATEST: &str = "MillisBehindLatest";
pub const THROTTLES: &str = "Throttles";
pub const PROCESSOR_ERRORS: &str = "ProcessorErrors";
pub const TRIMMED_READS: &str = "TrimmedReads";
pub const SHARDS_VANISHED: &str = "ShardsVanished";
pub const SHARDS_ENDED: &str = "ShardsEnded";
pub const RECORDS_OUTSIDE_HASH_RANGE: &str = "RecordsOutsideHashRange";
pub const LEASES_HELD: &str = "LeasesHeld";
pub const LEASES_TAKEN: &str = "LeasesTaken";
pub const LEASES_STOLEN: &str = "LeasesStolen";
pub const LEASES_HANDED_OFF: &str = "LeasesHandedOff";
pub const LEASES_LOST: &str = "LeasesLost";
pub const LEASES_EXPIRED: &str = "LeasesExpired";
pub const SHARD_TASK_PANICS: &str = "ShardTaskPanics";

// s3-connector.
pub const RECORDS_IN: &str = "RecordsIn";
pub const BYTES_IN: &str = "BytesIn";
pub const VALID_EVENTS: &str = "ValidEvents";
pub const NORMALIZED_EVENTS: &str = "NormalizedEvents";
/// Valid events with top-level fields outside the schema: kept in the lake only.
pub const EVENTS_WITH_UNKNOWN_FIELDS: &str = "EventsWithUnknownFields";
pub const BYTES_OUT: &str = "BytesOut";
pub const BATCHES_WRITTEN: &str = "BatchesWritten";
pub const BATCH_AGE_AT_FLUSH: &str = "BatchAgeAtFlush";
pub const S3_PUT_LATENCY: &str = "S3PutLatency";
pub const BACK_PRESSURE_WAITS: &str = "BackPressureWaits";
pub const WRITE_FAILURES: &str = "WriteFailures";

// s3-connector (invalid events) and player-state-worker (quarantined records).
pub const REJECTED_RECORDS: &str = "RejectedRecords";

// redshift-connector.
pub const FILES_LOADED: &str = "FilesLoaded";
pub const FILES_SKIPPED: &str = "FilesSkipped";
pub const ROWS_STAGED: &str = "RowsStaged";
pub const ROWS_INSERTED: &str = "RowsInserted";
pub const DUPLICATES_IN_BATCH: &str = "DuplicatesInBatch";
pub const DUPLICATES_IN_TABLE: &str = "DuplicatesInTable";
/// Rows of players erased by `pipelinectl forget` that a load dropped.
pub const ROWS_FORGOTTEN: &str = "RowsForgotten";
pub const LOAD_LATENCY: &str = "LoadLatency";
pub const LOAD_FAILURES: &str = "LoadFailures";
pub const PENDING_FILES: &str = "PendingFiles";
pub const INVALID_POINTERS: &str = "InvalidPointers";
pub const DUPLICATE_POINTERS: &str = "DuplicatePointers";
pub const DEAD_LETTER_POINTERS: &str = "DeadLetterPointers";

// cron-connector.
pub const JOB_RUNS: &str = "JobRuns";
pub const JOB_FAILURES: &str = "JobFailures";
pub const JOB_DURATION: &str = "JobDuration";
/// The level-drift check: players miscounted (sum over levels of |LevelState - recount|).
pub const LEVEL_DRIFT_PLAYERS: &str = "LevelDriftPlayers";
/// The level-drift check: levels whose count is not the recount.
pub const LEVEL_DRIFT_LEVELS: &str = "LevelDriftLevels";

// player-state-worker.
pub const EVENTS_IN: &str = "EventsIn";
pub const SKIPPED_EVENTS: &str = "SkippedEvents";
pub const PLAYER_UPDATES: &str = "PlayerUpdates";
pub const STALE_EVENTS: &str = "StaleEvents";
pub const REPLAYED_RECORDS_SKIPPED: &str = "ReplayedRecordsSkipped";
pub const LEVEL_TRANSACTIONS: &str = "LevelTransactions";
pub const LEVEL_DELTAS_APPLIED: &str = "LevelDeltasApplied";
pub const TRANSITIONS_APPLIED: &str = "TransitionsApplied";
pub const GUARD_CONFLICTS: &str = "GuardConflicts";
pub const PLAYERS_PRUNED: &str = "PlayersPruned";
pub const PLAYERS_ON_LEVEL: &str = "PlayersOnLevel";

/// Which services write a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmittedBy {
    EveryService,
    /// Every service that reads a stream through `shard-consumer`, once per lease
    /// application (its `Application` dimension).
    ShardConsumers,
    /// These services, by name.
    Services(&'static [&'static str]),
}

/// One metric the code writes.
#[derive(Debug, Clone, Copy)]
pub struct Emitted {
    pub name: &'static str,
    pub by: EmittedBy,
    /// Each set of dimensions (besides `Service`) it is written with; CloudWatch
    /// keeps one series per set.
    pub dimensions: &'static [&'static [&'static str]],
}

const fn by(name: &'static str, by: EmittedBy, dimensions: &'static [&'static [&'static str]]) -> Emitted {
    Emitted { name, by, dimensions }
}

use EmittedBy::{EveryService, Services, ShardConsumers};

const S3: EmittedBy = Services(&["s3-connector"]);
const REDSHIFT: EmittedBy = Services(&["redshift-connector"]);
const CRON: EmittedBy = Services(&["cron-connector"]);
const WORKER: EmittedBy = Services(&["player-state-worker"]);
const APP: &[&[&str]] = &[&[APPLICATION]];
const PLAIN: &[&[&str]] = &[&[]];

/// Every metric the services write.
pub const CATALOGUE: &[Emitted] = &[
    by(UP, EveryService, PLAIN),
    by(RECORDS_READ, ShardConsumers, APP),
    by(BYTES_READ, ShardConsumers, APP),
    // Per shard, and per application for alarms and scaling whatever the shards.
    by(
        MILLIS_BEHIND_LATEST,
        ShardConsumers,
        &[&[APPLICATION, SHARD], &[APPLICATION]],
    ),
    by(THROTTLES, ShardConsumers, APP),
    by(PROCESSOR_ERRORS, ShardConsumers, APP),
    by(TRIMMED_READS, ShardConsumers, APP),
    by(SHARDS_VANISHED, ShardConsumers, APP),
    by(SHARDS_ENDED, ShardConsumers, APP),
    by(RECORDS_OUTSIDE_HASH_RANGE, ShardConsumers, APP),
    by(LEASES_HELD, ShardConsumers, APP),
    by(LEASES_TAKEN, ShardConsumers, APP),
    by(LEASES_STOLEN, ShardConsumers, APP),
    by(LEASES_HANDED_OFF, ShardConsumers, APP),
    by(LEASES_LOST, ShardConsumers, APP),
    by(LEASES_EXPIRED, ShardConsumers, APP),
    by(SHARD_TASK_PANICS, ShardConsumers, APP),
    by(RECORDS_IN, S3, PLAIN),
    by(BYTES_IN, S3, PLAIN),
    by(VALID_EVENTS, S3, PLAIN),
    by(NORMALIZED_EVENTS, S3, &[&[NORMALIZATION]]),
    by(EVENTS_WITH_UNKNOWN_FIELDS, S3, PLAIN),
    by(BYTES_OUT, S3, PLAIN),
    by(BATCHES_WRITTEN, S3, PLAIN),
    by(BATCH_AGE_AT_FLUSH, S3, PLAIN),
    by(S3_PUT_LATENCY, S3, PLAIN),
    by(BACK_PRESSURE_WAITS, S3, PLAIN),
    by(WRITE_FAILURES, S3, &[&[OPERATION]]),
    // Per reason, and the total the alarms divide and sum.
    by(
        REJECTED_RECORDS,
        Services(&["s3-connector", "player-state-worker"]),
        &[&[REASON], &[]],
    ),
    by(FILES_LOADED, REDSHIFT, PLAIN),
    by(FILES_SKIPPED, REDSHIFT, PLAIN),
    by(ROWS_STAGED, REDSHIFT, PLAIN),
    by(ROWS_INSERTED, REDSHIFT, PLAIN),
    by(DUPLICATES_IN_BATCH, REDSHIFT, PLAIN),
    by(DUPLICATES_IN_TABLE, REDSHIFT, PLAIN),
    by(ROWS_FORGOTTEN, REDSHIFT, PLAIN),
    by(LOAD_LATENCY, REDSHIFT, PLAIN),
    by(LOAD_FAILURES, REDSHIFT, &[&[KIND], &[]]),
    by(PENDING_FILES, REDSHIFT, PLAIN),
    by(INVALID_POINTERS, REDSHIFT, PLAIN),
    by(DUPLICATE_POINTERS, REDSHIFT, PLAIN),
    by(DEAD_LETTER_POINTERS, REDSHIFT, PLAIN),
    by(JOB_RUNS, CRON, &[&[JOB, OUTCOME]]),
    by(JOB_FAILURES, CRON, PLAIN),
    by(JOB_DURATION, CRON, &[&[JOB]]),
    by(LEVEL_DRIFT_PLAYERS, CRON, PLAIN),
    by(LEVEL_DRIFT_LEVELS, CRON, PLAIN),
    by(EVENTS_IN, WORKER, PLAIN),
    by(SKIPPED_EVENTS, WORKER, &[&[REASON]]),
    by(PLAYER_UPDATES, WORKER, PLAIN),
    by(STALE_EVENTS, WORKER, PLAIN),
    by(REPLAYED_RECORDS_SKIPPED, WORKER, PLAIN),
    by(LEVEL_TRANSACTIONS, WORKER, PLAIN),
    by(LEVEL_DELTAS_APPLIED, WORKER, PLAIN),
    by(TRANSITIONS_APPLIED, WORKER, PLAIN),
    by(GUARD_CONFLICTS, WORKER, PLAIN),
    by(PLAYERS_PRUNED, WORKER, PLAIN),
    by(PLAYERS_ON_LEVEL, WORKER, &[&[LEVEL]]),
];

/// The catalogue's entry for `name`.
pub fn find(name: &str) -> Option<&'static Emitted> {
    CATALOGUE.iter().find(|m| m.name == name)
}

impl Emitted {
    /// Whether `service` may write this metric (`ShardConsumers` does not say which
    /// services are consumers; every one may).
    pub fn is_emitted_by(&self, service: &str) -> bool {
        match self.by {
            EveryService | ShardConsumers => true,
            Services(services) => services.contains(&service),
        }
    }

    /// Whether it is written with exactly `dimensions` (besides `Service`), in any order.
    pub fn has_dimensions(&self, dimensions: &[&str]) -> bool {
        self.dimensions
            .iter()
            .any(|set| set.len() == dimensions.len() && set.iter().all(|d| dimensions.contains(d)))
    }
}

/// Whether the catalogue lists `name` from `service` with exactly `dimensions`.
pub fn is_catalogued(service: &str, name: &str, dimensions: &[&str]) -> bool {
    find(name).is_some_and(|m| m.is_emitted_by(service) && m.has_dimensions(dimensions))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIMENSIONS: &[&str] = &[
        dimension::APPLICATION,
        dimension::SHARD,
        dimension::REASON,
        dimension::NORMALIZATION,
        dimension::OPERATION,
        dimension::KIND,
        dimension::JOB,
        dimension::OUTCOME,
        dimension::LEVEL,
    ];

    #[test]
    fn the_catalogue_is_well_formed() {
        let mut seen = std::collections::BTreeSet::new();
        for metric in CATALOGUE {
            assert!(seen.insert(metric.name), "{} listed twice", metric.name);
            // CloudWatch metric names: 1 to 255 characters; ours are plain ASCII words.
            assert!(
                !metric.name.is_empty()
                    && metric.name.len() <= 255
                    && metric.name.chars().all(|c| c.is_ascii_alphanumeric()),
                "{}",
                metric.name
            );
            assert!(!metric.dimensions.is_empty(), "{} has no dimension set", metric.name);
            for (i, set) in metric.dimensions.iter().enumerate() {
                for dimension in *set {
                    assert!(
                        DIMENSIONS.contains(dimension),
                        "{}: unknown dimension {dimension}",
                        metric.name
                    );
                }
                assert!(
                    !metric.dimensions[..i]
                        .iter()
                        .any(|other| other.len() == set.len() && other.iter().all(|d| set.contains(d))),
                    "{}: dimension set {set:?} twice",
                    metric.name
                );
            }
            // Root members of an EMF document cannot be both a metric and a dimension.
            assert!(!DIMENSIONS.contains(&metric.name) && metric.name != dimension::SERVICE);
        }
    }

    #[test]
    fn lookups_match_the_set_and_the_service() {
        assert!(is_catalogued("s3-connector", UP, &[]));
        assert!(is_catalogued("any-consumer", LEASES_LOST, &[APPLICATION]));
        assert!(!is_catalogued("s3-connector", LEASES_LOST, &[]));
        assert!(is_catalogued("x", MILLIS_BEHIND_LATEST, &[SHARD, APPLICATION]));
        assert!(!is_catalogued("x", MILLIS_BEHIND_LATEST, &[SHARD]));
        assert!(is_catalogued("player-state-worker", REJECTED_RECORDS, &[REASON]));
        assert!(!is_catalogued("redshift-connector", REJECTED_RECORDS, &[]));
        assert!(!is_catalogued("s3-connector", "NoSuchMetric", &[]));
    }
}
