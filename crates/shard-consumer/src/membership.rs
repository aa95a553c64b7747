//! Who is alive, the pure part. Every worker writes its entry in the worker table once
//! per renewal interval (a heartbeat counter, how many leases it reads, the leases it
//! asks their holders for); every worker reads the whole worker table at each taker
//! pass and judges the others by its own clock, the way the Java KCL judges a lease by
//! its counter: an entry whose heartbeat stood still for the failover time is a dead
//! worker's, and its leases are free.
//!
//! Why one heartbeat per worker instead of the Java KCL's renewal of every lease: a
//! lease write costs a DynamoDB write unit, so renewing 1,000 leases every 3.3 s costs
//! about 1.1 million writes an hour whatever the fleet; 50 heartbeats cost 54,000
//! (`docs/performance.md` has the figures). The lease table keeps the Java KCL 2.x
//! layout: only liveness moved, to a table of its own.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::time::Instant;

/// One worker's entry in the worker table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WorkerEntry {
    pub worker_id: String,
    /// Bumped by every heartbeat.
    pub heartbeat: u64,
    /// Leases it reads (finished leases and children waiting for a parent not counted).
    pub leases: u64,
    /// Leases it asks their holders to hand over (a steal, done by the holder).
    pub wants: Vec<String>,
    /// Bumped when it created leases it did not take itself: others look for them.
    pub lease_epoch: u64,
}

/// A worker seen in the table, by this worker's clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub entry: WorkerEntry,
    /// When its heartbeat was last seen to move (or first seen).
    pub moved_at: Instant,
}

/// What one read of the worker table says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    /// Workers whose heartbeat moved within the failover time (this worker always).
    pub live: BTreeMap<String, WorkerEntry>,
    /// Workers whose heartbeat stood still for the failover time, and for how long
    /// beyond it.
    pub dead: BTreeMap<String, (WorkerEntry, Duration)>,
    /// Workers whose entry was deleted (they stopped after releasing what they could, or
    /// were dead long), and how long ago that was seen: what they still own is free.
    pub departed: BTreeMap<String, Duration>,
    /// Since the last read a worker died or left, or one made leases for others: the
    /// lease table is worth a scan.
    pub changed: bool,
}

/// Remembers what the worker table looked like, to judge heartbeats over time.
#[derive(Debug, Default)]
pub struct Membership {
    seen: BTreeMap<String, Seen>,
    live: BTreeSet<String>,
    /// Workers seen leaving, and when (remembered for a while).
    departed: BTreeMap<String, Instant>,
}

/// Departed workers are remembered this many failover times (their leases are taken
/// long before).
const REMEMBER_DEPARTED: u32 = 30;

impl Membership {
    /// Takes in one read of the worker table, made at `now` by `me` (whose own entry
    /// is `mine`, as it last wrote it).
    pub fn observe(&mut self, me: &WorkerEntry, entries: Vec<WorkerEntry>, now: Instant, failover: Duration) -> View {
        let mut view = View::default();
        let mut present = BTreeSet::new();
        for entry in entries {
            if entry.worker_id == me.worker_id {
                continue;
            }
            present.insert(entry.worker_id.clone());
            let seen = self.seen.entry(entry.worker_id.clone()).or_insert_with(|| Seen {
                entry: entry.clone(),
                moved_at: now,
            });
            if seen.entry.heartbeat != entry.heartbeat {
                seen.moved_at = now;
            }
            if seen.entry.lease_epoch != entry.lease_epoch {
                view.changed = true;
            }
            seen.entry = entry.clone();
            let still = now.saturating_duration_since(seen.moved_at);
            if still >= failover {
                if self.live.contains(&entry.worker_id) {
                    view.changed = true;
                }
                view.dead.insert(entry.worker_id.clone(), (entry, still - failover));
            } else {
                view.live.insert(entry.worker_id.clone(), entry);
            }
        }
        // Gone from the table: stopped (its leases released) or cleaned up long dead.
        for id in self.seen.keys().filter(|id| !present.contains(*id)) {
            self.departed.insert(id.clone(), now);
            view.changed = true;
        }
        self.seen.retain(|id, _| present.contains(id));
        self.departed.retain(|id, at| {
            !present.contains(id) && now.saturating_duration_since(*at) < failover * REMEMBER_DEPARTED
        });
        view.departed = self
            .departed
            .iter()
            .map(|(id, at)| (id.clone(), now.saturating_duration_since(*at)))
            .collect();
        view.live.insert(me.worker_id.clone(), me.clone());
        self.live = view.live.keys().cloned().collect();
        view
    }
}

impl View {
    pub fn is_live(&self, worker_id: &str) -> bool {
        self.live.contains_key(worker_id)
    }

    pub fn is_dead(&self, worker_id: &str) -> bool {
        self.dead.contains_key(worker_id)
    }

    /// The live worker with the smallest id: it syncs the shards and cleans up entries
    /// of long-dead workers. Two workers that briefly both think they lead do no harm
    /// (every write they make is conditional).
    pub fn leader(&self) -> Option<&str> {
        self.live.keys().next().map(String::as_str)
    }

    /// The live worker with the most leases other than `me` (ties: the smallest id).
    pub fn busiest_other(&self, me: &str) -> Option<(&str, u64)> {
        self.live
            .values()
            .filter(|e| e.worker_id != me)
            .max_by(|a, b| a.leases.cmp(&b.leases).then_with(|| b.worker_id.cmp(&a.worker_id)))
            .map(|e| (e.worker_id.as_str(), e.leases))
    }

    /// Leases per worker for balance: ceil(leases read by live workers, plus `free`
    /// ones, over live workers), capped at `max_leases`.
    pub fn target(&self, free: u64, max_leases: usize) -> u64 {
        let leases: u64 = self.live.values().map(|e| e.leases).sum::<u64>() + free;
        let workers = self.live.len().max(1) as u64;
        leases.div_ceil(workers).min(max_leases as u64)
    }

    /// The share every live worker holds at least once balanced: floor(leases read by
    /// live workers / live workers). A holder hands over no lease below it.
    pub fn floor_share(&self) -> u64 {
        let leases: u64 = self.live.values().map(|e| e.leases).sum();
        leases / self.live.len().max(1) as u64
    }

    /// Requests from live workers for leases in `held`: per lease, the asker with the
    /// fewest leases (ties: the smallest id), as (lease, asker, asker's leases).
    pub fn requests_for(&self, held: &BTreeSet<String>) -> Vec<(String, String, u64)> {
        let mut best: BTreeMap<&str, (&str, u64)> = BTreeMap::new();
        for entry in self.live.values() {
            for key in entry.wants.iter().filter(|k| held.contains(*k)) {
                let better = best
                    .get(key.as_str())
                    .is_none_or(|(id, leases)| (entry.leases, entry.worker_id.as_str()) < (*leases, *id));
                if better {
                    best.insert(key, (&entry.worker_id, entry.leases));
                }
            }
        }
        best.into_iter()
            .map(|(key, (asker, leases))| (key.to_string(), asker.to_string(), leases))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, heartbeat: u64, leases: u64) -> WorkerEntry {
        WorkerEntry {
            worker_id: id.into(),
            heartbeat,
            leases,
            ..WorkerEntry::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_is_dead_once_its_heartbeat_stood_still_for_the_failover_time() {
        let failover = Duration::from_secs(10);
        let me = entry("me", 1, 0);
        let mut membership = Membership::default();
        let t0 = Instant::now();
        let view = membership.observe(&me, vec![entry("a", 5, 2), entry("b", 7, 2)], t0, failover);
        assert!(
            view.is_live("a") && view.is_live("b") && view.is_live("me"),
            "first sight is alive"
        );
        assert!(!view.changed, "arrivals are no reason to scan");
        let view = membership.observe(
            &me,
            vec![entry("a", 6, 2), entry("b", 7, 2)],
            t0 + Duration::from_secs(9),
            failover,
        );
        assert!(view.is_live("b"), "9 s of stillness");
        let view = membership.observe(
            &me,
            vec![entry("a", 6, 2), entry("b", 7, 2)],
            t0 + Duration::from_secs(12),
            failover,
        );
        assert!(view.is_live("a"), "moved at 9 s");
        assert_eq!(view.dead.get("b").map(|d| d.1), Some(Duration::from_secs(2)));
        assert!(view.changed, "a death is a reason to scan");
        let view = membership.observe(
            &me,
            vec![entry("a", 7, 2), entry("b", 7, 2)],
            t0 + Duration::from_secs(15),
            failover,
        );
        assert!(!view.changed, "still dead is no news");
        let view = membership.observe(&me, vec![entry("a", 8, 2)], t0 + Duration::from_secs(16), failover);
        assert!(view.changed, "b's entry is gone");
        assert_eq!(view.departed.get("b"), Some(&Duration::ZERO));
        assert_eq!(view.leader(), Some("a"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_epoch_that_moves_is_news() {
        let me = entry("me", 1, 0);
        let mut membership = Membership::default();
        let now = Instant::now();
        let failover = Duration::from_secs(10);
        membership.observe(&me, vec![entry("a", 1, 0)], now, failover);
        let mut bumped = entry("a", 2, 0);
        bumped.lease_epoch = 1;
        assert!(membership.observe(&me, vec![bumped], now, failover).changed);
    }

    #[test]
    fn targets_and_requests() {
        let mut view = View::default();
        for (id, leases) in [("a", 6), ("b", 2), ("c", 1)] {
            view.live.insert(id.into(), entry(id, 1, leases));
        }
        assert_eq!(view.target(0, usize::MAX), 3);
        assert_eq!(view.target(3, usize::MAX), 4);
        assert_eq!(view.target(0, 2), 2);
        assert_eq!(view.floor_share(), 3);
        assert_eq!(view.busiest_other("c"), Some(("a", 6)));
        view.live.get_mut("b").expect("b").wants = vec!["s1".into()];
        view.live.get_mut("c").expect("c").wants = vec!["s1".into(), "s9".into()];
        let held = BTreeSet::from(["s1".to_string(), "s2".to_string()]);
        assert_eq!(
            view.requests_for(&held),
            vec![("s1".to_string(), "c".to_string(), 1)],
            "the asker with the fewest leases gets it"
        );
    }
}
