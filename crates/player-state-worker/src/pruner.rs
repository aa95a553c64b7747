//! The idle-player pruner: one instance at a time (a singleton lease) deletes players
//! whose last event is older than the idle timeout. Each delete is conditioned on
//! `lastUpdated` not having moved since the scan, and the stream turns it into a
//! level decrement. A lost lease (another pruner, or `pipelinectl reconcile-levels`
//! pausing it) stops a pass before its next page and its next delete, not only between
//! passes; a delete already sent may still land.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use pipeline_runtime::Metrics;
use pipeline_runtime::clock::now_ms;
use pipeline_runtime::error::AwsError;
use pipeline_runtime::metrics::names::{self, dimension::LEVEL};
use shard_consumer::lease_table::LeaseTableError;
use shard_consumer::singleton::SingletonLease;
use tokio_util::sync::CancellationToken;

use crate::sink::player_state;

/// Why the pruner stopped: it cannot take its lease or cannot do its work at all.
#[derive(Debug, thiserror::Error)]
pub enum PrunerError {
    #[error("lease: {0}")]
    Lease(#[from] LeaseTableError),
    #[error("{}", .0.explain())]
    Store(AwsError),
}

/// The lease application name of the pruner's singleton lease.
pub const APPLICATION: &str = "player-state-pruner";

pub struct Pruner {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub table: String,
    /// Read after each pass to publish `PlayersOnLevel` (one instance publishes, so the
    /// dashboard's counts are not summed over workers).
    pub level_state_table: String,
    pub idle_timeout: Duration,
    pub interval: Duration,
    pub segments: i32,
    pub lease: SingletonLease,
    pub metrics: Metrics,
}

impl Pruner {
    /// Holds the singleton lease and prunes every interval until shutdown.
    /// A pass that fails for a passing reason is tried again next interval; one that
    /// cannot work (a denied call, a missing table) stops the pruner with the error.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<(), PrunerError> {
        while !shutdown.is_cancelled() {
            let Some(guard) = self.lease.acquire(&shutdown).await? else {
                return Ok(());
            };
            let mut published = BTreeSet::new();
            loop {
                match self.prune_once(&guard.lost).await {
                    Ok(pruned) => self.metrics.count(names::PLAYERS_PRUNED, pruned, &[]),
                    Err(error) if error.is_retryable() => {
                        tracing::warn!(%error, "pruning pass failed; trying again next interval");
                    }
                    Err(error) => {
                        guard.release().await;
                        return Err(PrunerError::Store(error));
                    }
                }
                if let Err(error) = self.publish_levels(&mut published).await {
                    if !error.is_retryable() {
                        guard.release().await;
                        return Err(PrunerError::Store(error));
                    }
                    tracing::warn!(%error, "level counts not published; trying again next interval");
                }
                tokio::select! {
                    () = tokio::time::sleep(self.interval) => {}
                    () = guard.lost.cancelled() => break,
                    () = shutdown.cancelled() => {
                        guard.release().await;
                        return Ok(());
                    }
                }
            }
            tracing::warn!("pruner lease lost; waiting to take it again");
        }
        Ok(())
    }

    /// Sets `PlayersOnLevel` per level from LevelState; a level that emptied since the
    /// last pass is set to 0 (a gauge keeps its last value).
    async fn publish_levels(&self, published: &mut BTreeSet<String>) -> Result<(), AwsError> {
        let levels = live_state::level_state::read_counts(&self.dynamodb, &self.level_state_table).await?;
        let now: BTreeSet<String> = levels.iter().map(|l| l.level_id.clone()).collect();
        for level in &levels {
            self.metrics.gauge(
                names::PLAYERS_ON_LEVEL,
                level.player_count as f64,
                pipeline_runtime::Unit::Count,
                &[(LEVEL, &level.level_id)],
            );
        }
        for emptied in published.difference(&now) {
            self.metrics.gauge(
                names::PLAYERS_ON_LEVEL,
                0.0,
                pipeline_runtime::Unit::Count,
                &[(LEVEL, emptied)],
            );
        }
        published.extend(now);
        Ok(())
    }

    /// One pass over every segment; returns how many players were deleted. `stop` (the
    /// lease lost) ends it before the next page or delete of any segment.
    pub async fn prune_once(&self, stop: &CancellationToken) -> Result<u64, AwsError> {
        let cutoff = now_ms() - i64::try_from(self.idle_timeout.as_millis()).unwrap_or(i64::MAX);
        let counts: Vec<Result<u64, AwsError>> = futures::stream::iter(0..self.segments)
            .map(|segment| self.prune_segment(segment, cutoff, stop))
            .buffer_unordered(self.segments.max(1) as usize)
            .collect()
            .await;
        let mut total = 0;
        for count in counts {
            total += count?;
        }
        Ok(total)
    }

    async fn prune_segment(&self, segment: i32, cutoff: i64, stop: &CancellationToken) -> Result<u64, AwsError> {
        let mut start = None;
        let mut pruned = 0;
        let stopped = |pruned: u64| -> Result<u64, AwsError> {
            tracing::info!(segment, pruned, "pruner lease lost; pass stopped");
            Ok(pruned)
        };
        loop {
            if stop.is_cancelled() {
                return stopped(pruned);
            }
            let page =
                player_state::scan_idle(&self.dynamodb, &self.table, segment, self.segments, cutoff, start).await?;
            for idle in page.players {
                // Whoever holds the lease now (a pause of PlayerState's writers) relies
                // on this process writing nothing more.
                if stop.is_cancelled() {
                    return stopped(pruned);
                }
                if player_state::delete_if_unchanged(&self.dynamodb, &self.table, idle).await? {
                    pruned += 1;
                }
            }
            match page.next {
                Some(key) => start = Some(key),
                None => return Ok(pruned),
            }
        }
    }
}
