//! What a run saw: the invariant violations, the counts for the report, and a trace
//! digest (FNV-1a over every hand-over) that proves a replay identical.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::world::lock;

/// The invariants a run checks, by name (for the report).
pub const INVARIANTS: [&str; 8] = [
    "every record handed over at least once, in order per shard",
    "checkpoints never move back",
    "no finished shard read again",
    "no two workers read a shard after the old holder's failover time",
    "no lease taken from a worker alive within the failover time",
    "every shard read to its end",
    "no lease unowned over 2 x failover while a worker has room",
    "leases released and worker entries deleted on graceful stop",
];

#[derive(Debug, Default)]
struct State {
    violations: Vec<(Duration, String)>,
    trace: u64,
    checks: u64,
    batches: u64,
    records: u64,
    redelivered: u64,
    /// Per shard, which stream records were handed over at least once.
    delivered: BTreeMap<String, Vec<bool>>,
}

/// Collects what the checks find.
#[derive(Debug)]
pub struct Observer {
    state: Mutex<State>,
}

impl Default for Observer {
    fn default() -> Self {
        Self {
            state: Mutex::new(State {
                trace: 0xcbf2_9ce4_8422_2325,
                ..State::default()
            }),
        }
    }
}

/// Counts of hand-overs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deliveries {
    pub batches: u64,
    pub records: u64,
    pub redelivered: u64,
    pub checks: u64,
}

impl Observer {
    /// An invariant did not hold.
    pub fn violation(&self, at: Duration, what: String) {
        tracing::error!(target: "sim", "VIOLATION: {what}");
        let mut state = lock(&self.state);
        mix(&mut state.trace, what.as_bytes());
        state.violations.push((at, what));
    }

    /// One invariant check was made (it held or a violation was recorded).
    pub fn checked(&self, n: u64) {
        lock(&self.state).checks += n;
    }

    /// Folds an event into the trace digest.
    pub fn trace(&self, event: &str) {
        tracing::debug!(target: "sim", "{event}");
        mix(&mut lock(&self.state).trace, event.as_bytes());
    }

    /// A batch was handed over: `indexes` are its stream records' indexes in `shard`.
    pub fn handed(&self, shard: &str, indexes: impl Iterator<Item = usize>, records: u64, redelivered: u64) {
        let mut state = lock(&self.state);
        state.batches += 1;
        state.records += records;
        state.redelivered += redelivered;
        let seen = state.delivered.entry(shard.to_string()).or_default();
        for index in indexes {
            if seen.len() <= index {
                seen.resize(index + 1, false);
            }
            seen[index] = true;
        }
    }

    pub fn was_delivered(&self, shard: &str, index: usize) -> bool {
        lock(&self.state)
            .delivered
            .get(shard)
            .and_then(|seen| seen.get(index))
            .copied()
            .unwrap_or(false)
    }

    pub fn violations(&self) -> Vec<(Duration, String)> {
        lock(&self.state).violations.clone()
    }

    pub fn digest(&self) -> u64 {
        lock(&self.state).trace
    }

    pub fn deliveries(&self) -> Deliveries {
        let state = lock(&self.state);
        Deliveries {
            batches: state.batches,
            records: state.records,
            redelivered: state.redelivered,
            checks: state.checks,
        }
    }
}

fn mix(hash: &mut u64, bytes: &[u8]) {
    for byte in bytes {
        *hash ^= u64::from(*byte);
        *hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    *hash ^= 0xff;
    *hash = hash.wrapping_mul(0x0100_0000_01b3);
}
