//! Watches the live state while the chaos runs, through clients that bypass the fault
//! proxy: LevelState counts (none may ever be negative), PlayerState event times (none
//! may ever move back), and the lease tables' checkpoints (which shards were read to
//! their end, even after their leases are cleaned up).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pipeline_runtime::AwsClients;

use crate::stack::{item_number, item_text, scan_table};

/// What the observer saw.
#[derive(Debug, Default, Clone)]
pub struct Observations {
    pub polls: u64,
    /// LevelState readings below zero, as `level: count`.
    pub negative_counts: Vec<String>,
    /// PlayerState items whose `lastUpdated` went down between two readings.
    pub moved_back: Vec<String>,
    /// The last checkpoint seen per (lease table, shard).
    pub checkpoints: BTreeMap<(String, String), String>,
    /// (lease table, shard) pairs seen at SHARD_END.
    pub ended: HashSet<(String, String)>,
    /// Shards seen at SHARD_END and later with a lease elsewhere again: read twice.
    pub read_again: BTreeSet<(String, String)>,
    /// Scans that failed (the emulator was busy); they are skipped, not fatal.
    pub failed_scans: u64,
}

/// The tables the observer reads.
#[derive(Debug, Clone)]
pub struct Watched {
    pub level_state: String,
    pub player_state: String,
    pub lease_tables: Vec<String>,
}

/// Polls until `stop` is set, publishing what it saw so far in `shared` after each
/// poll; returns all it saw.
pub async fn observe(
    aws: AwsClients,
    tables: Watched,
    every: Duration,
    stop: Arc<AtomicBool>,
    shared: Arc<Mutex<Observations>>,
) -> Observations {
    let mut seen = Observations::default();
    let mut last_updated: HashMap<String, i64> = HashMap::new();
    loop {
        let last = stop.load(Ordering::Relaxed);
        poll(&aws, &tables, &mut seen, &mut last_updated).await;
        *shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = seen.clone();
        if last {
            return seen;
        }
        tokio::time::sleep(every).await;
    }
}

async fn poll(aws: &AwsClients, tables: &Watched, seen: &mut Observations, last_updated: &mut HashMap<String, i64>) {
    seen.polls += 1;
    match scan_table(aws, &tables.level_state).await {
        Ok(items) => {
            for item in items {
                let count = item_number(&item, "playerCount").unwrap_or(0);
                if count < 0 {
                    seen.negative_counts
                        .push(format!("{}: {count}", item_text(&item, "levelId")));
                }
            }
        }
        Err(_) => seen.failed_scans += 1,
    }
    match scan_table(aws, &tables.player_state).await {
        Ok(items) => {
            let mut now = HashMap::new();
            for item in items {
                let player = item_text(&item, "playerId");
                let Some(updated) = item_number(&item, "lastUpdated") else {
                    continue;
                };
                if let Some(before) = last_updated.get(&player)
                    && updated < *before
                {
                    seen.moved_back.push(format!("{player}: {before} -> {updated}"));
                }
                now.insert(player, updated);
            }
            // A pruned player may come back later; only items present in both readings compare.
            *last_updated = now;
        }
        Err(_) => seen.failed_scans += 1,
    }
    for table in &tables.lease_tables {
        match scan_table(aws, table).await {
            Ok(items) => {
                for item in items {
                    let key = (table.clone(), item_text(&item, "leaseKey"));
                    let checkpoint = item_text(&item, "checkpoint");
                    if checkpoint == "SHARD_END" {
                        seen.ended.insert(key.clone());
                    } else if seen.ended.contains(&key) {
                        seen.read_again.insert(key.clone());
                    }
                    seen.checkpoints.insert(key, checkpoint);
                }
            }
            Err(_) => seen.failed_scans += 1,
        }
    }
}
