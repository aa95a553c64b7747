//! Which leases a worker takes, or asks their holders for: a pure function of a
//! lease-table snapshot.
//!
//! - A lease is free when it has no owner, or when its owner is dead: its heartbeat
//!   stood still for the failover time ([`crate::membership`]), or, for an owner with
//!   no entry in the worker table (a worker of another kind, such as a Java KCL one),
//!   the lease's own counter did, as seen by this worker's clock (no clock is shared
//!   between workers, so expiry is judged from observed changes, as the Java KCL does).
//! - A free lease nobody took for a taker pass beyond its expiry is orphaned: any worker
//!   with room takes its part of the orphans (their number over the workers, rounded
//!   up) whatever the balance (balance comes back through hand-offs).
//! - Workers are the live ones of the worker table, the owners of live leases, and
//!   this one: a fleet that starts together shares the leases out from the first pass,
//!   instead of the first worker to scan taking them all. Finished leases
//!   (SHARD_END) take no part in balancing, nor do children waiting for a parent to
//!   finish: they cost a poll of the parent's lease now and then, not a reader, so they
//!   neither count toward a worker's load and its cap nor get stolen. (Counted, two
//!   workers capped at one lease each and holding both children of an unfinished
//!   parent would leave the parent to nobody, for ever.)
//! - Target per worker = ceil(working leases / workers), capped by max leases per worker.
//! - Below target, a worker first takes free leases, parents before children waiting
//!   for them; only when none are free does it ask for leases of busier workers
//!   (`steal`: the holder flushes, checkpoints and hands them over): one from each
//!   worker holding at least 2 more than it, the busiest first, at most `max_steal` in
//!   all. A 1-lease imbalance is left alone so leases do not ping-pong between workers.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::time::Duration;

use tokio::time::Instant;

use crate::lease::Lease;
use crate::membership::View;

/// Remembers when each lease's counter was last seen to change.
#[derive(Debug, Default)]
pub struct ExpiryTracker {
    last_change: HashMap<String, (u64, Instant)>,
}

impl ExpiryTracker {
    /// Records a snapshot taken at `now` and returns the keys of owned leases whose
    /// counter has not moved for at least `failover`.
    pub fn observe(&mut self, leases: &[Lease], now: Instant, failover: Duration) -> HashSet<String> {
        let mut expired = HashSet::new();
        let mut present = HashSet::new();
        for lease in leases {
            present.insert(lease.key.clone());
            let entry = self
                .last_change
                .entry(lease.key.clone())
                .or_insert((lease.counter, now));
            if entry.0 != lease.counter {
                *entry = (lease.counter, now);
            }
            if lease.owner.is_some() && now.duration_since(entry.1) >= failover {
                expired.insert(lease.key.clone());
            }
        }
        self.last_change.retain(|key, _| present.contains(key));
        expired
    }

    /// The lease's counter was `counter` at `at` (this worker wrote it).
    pub fn saw(&mut self, key: &str, counter: u64, at: Instant) {
        self.last_change.insert(key.to_string(), (counter, at));
    }

    /// How long the lease's counter has stood still as of `now`, if it was seen.
    pub fn still_for(&self, key: &str, now: Instant) -> Option<Duration> {
        self.last_change
            .get(key)
            .map(|(_, since)| now.saturating_duration_since(*since))
    }
}

/// Whether a holder whose renewals keep failing must give its lease up now: before
/// the next renewal could land, others may already judge it expired, and a shard
/// must not have two readers.
pub fn renewal_overdue(last_renewed: Instant, renewal_interval: Duration, failover: Duration) -> bool {
    last_renewed.elapsed() + renewal_interval >= failover
}

/// What a lease-table snapshot is judged with: who this worker is, who is alive, and
/// how long the counters of leases of owners without an entry stood still.
pub struct OwnerJudgement<'a> {
    pub worker_id: &'a str,
    pub leases: &'a [Lease],
    pub view: &'a View,
    /// Whether this worker reads the shard (a task of its own runs for it).
    pub reading: &'a dyn Fn(&str) -> bool,
    pub tracker: &'a ExpiryTracker,
    /// Owned leases whose counter stood still for the failover time
    /// ([`ExpiryTracker::observe`] on this snapshot).
    pub counters_still: &'a HashSet<String>,
    pub now: Instant,
    pub failover: Duration,
    /// How long a free lease waits for a worker below its share before it is an orphan
    /// (a taker pass).
    pub grace: Duration,
}

/// Which leases of a snapshot are free, and whether any owner was judged without an entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Judged {
    /// Owned leases whose owner is dead, departed, or (this worker's) not read here.
    pub expired: HashSet<String>,
    /// Free leases nobody took for a taker pass beyond their expiry.
    pub orphaned: HashSet<String>,
    /// A lease's owner has no worker entry (another kind of worker, or an entry not
    /// visible yet): judged by its counter, worth a look again a failover time later.
    pub unknown_owner: bool,
}

/// Judges every unfinished lease's owner: a free lease is an orphan once a pass went by
/// without a worker below its share taking it; a dead worker's lease once a pass went
/// by after others saw it dead.
pub fn judge_owners(input: &OwnerJudgement<'_>) -> Judged {
    let mut judged = Judged::default();
    let (now, grace) = (input.now, input.grace);
    for lease in input.leases.iter().filter(|l| !l.checkpoint.is_shard_end()) {
        let key = lease.key.clone();
        match lease.owner.as_deref() {
            None => {
                if input.tracker.still_for(&key, now).is_some_and(|still| still >= grace) {
                    judged.orphaned.insert(key);
                }
            }
            // Ours in the table but not read here (a task that ended without releasing):
            // nobody else takes it while this worker lives, so take it back.
            Some(owner) if owner == input.worker_id => {
                if !(input.reading)(&key) {
                    judged.expired.insert(key.clone());
                    judged.orphaned.insert(key);
                }
            }
            Some(owner) if input.view.is_live(owner) => {}
            Some(owner) => {
                let dead_for = input.view.dead.get(owner).map(|(_, beyond)| *beyond);
                let dead_for = match dead_for.or_else(|| input.view.departed.get(owner).copied()) {
                    Some(beyond) => Some(beyond),
                    None => {
                        // No entry: a worker of another kind, or one whose entry is
                        // not visible yet. Judged by the lease's own counter.
                        judged.unknown_owner = true;
                        input.counters_still.contains(&key).then(|| {
                            input
                                .tracker
                                .still_for(&key, now)
                                .map_or(Duration::ZERO, |still| still.saturating_sub(input.failover))
                        })
                    }
                };
                if let Some(beyond) = dead_for {
                    if beyond >= grace {
                        judged.orphaned.insert(key.clone());
                    }
                    judged.expired.insert(key);
                }
            }
        }
    }
    judged
}

/// How many unfinished leases are free: unowned, or `expired`.
pub fn free_count(leases: &[Lease], expired: &HashSet<String>) -> u64 {
    leases
        .iter()
        .filter(|l| !l.checkpoint.is_shard_end() && (l.owner.is_none() || expired.contains(&l.key)))
        .count() as u64
}

/// What a taker pass should try.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TakePlan {
    /// Free (unowned or expired) leases to take.
    pub take: Vec<String>,
    /// Live leases of the most loaded worker to ask for.
    pub steal: Vec<String>,
}

/// Inputs of a taker decision.
#[derive(Debug, Clone)]
pub struct TakeInput<'a> {
    pub worker_id: &'a str,
    /// Other workers known to be alive (from the worker table), with or without leases.
    pub live_workers: &'a [&'a str],
    pub leases: &'a [Lease],
    /// Owned leases whose owner is dead.
    pub expired: &'a HashSet<String>,
    /// Free leases nobody took for a taker pass beyond their expiry.
    pub orphaned: &'a HashSet<String>,
    pub max_leases: usize,
    pub max_steal: usize,
}

/// Whether `lease` is a child waiting for a parent whose lease is not finished.
pub fn is_waiting(lease: &Lease, leases: &[Lease]) -> bool {
    lease
        .parent_shard_ids
        .iter()
        .any(|parent| leases.iter().any(|l| &l.key == parent && !l.checkpoint.is_shard_end()))
}

/// Decides what to take and steal.
pub fn plan(input: &TakeInput<'_>) -> TakePlan {
    let active: Vec<&Lease> = input.leases.iter().filter(|l| !l.checkpoint.is_shard_end()).collect();
    if active.is_empty() {
        return TakePlan::default();
    }
    let waiting: HashSet<&str> = active
        .iter()
        .filter(|l| is_waiting(l, input.leases))
        .map(|l| l.key.as_str())
        .collect();
    let is_free = |lease: &Lease| lease.owner.is_none() || input.expired.contains(&lease.key);
    let mut load: BTreeMap<&str, usize> = BTreeMap::new();
    load.insert(input.worker_id, 0);
    for worker in input.live_workers {
        load.insert(worker, 0);
    }
    for lease in &active {
        if let Some(owner) = lease.owner.as_deref()
            && !is_free(lease)
        {
            let counted = usize::from(!waiting.contains(lease.key.as_str()));
            *load.entry(owner).or_default() += counted;
        }
    }
    let working = active.len() - waiting.len();
    let target = working.div_ceil(load.len()).min(input.max_leases);
    let mine = load[input.worker_id];
    let room = input.max_leases.saturating_sub(mine);
    // Orphans are taken by anyone with room: a free lease nobody below target took.
    let mut orphans: Vec<&Lease> = active
        .iter()
        .copied()
        .filter(|l| is_free(l) && !waiting.contains(l.key.as_str()) && input.orphaned.contains(&l.key))
        .collect();
    spread(&mut orphans, input.worker_id);
    // Each worker takes its part of them in a pass, so at a cold start (leases made
    // while the fleet scans) the first scanners do not take them all.
    let orphan_quota = orphans.len().div_ceil(load.len());

    // Free children waiting for a parent are taken whatever the load: they hold nobody
    // back, and they must have an owner ready when the parent ends.
    let mut free_waiting: Vec<&Lease> = active
        .iter()
        .copied()
        .filter(|l| is_free(l) && waiting.contains(l.key.as_str()))
        .collect();
    spread(&mut free_waiting, input.worker_id);
    let waiting_keys = free_waiting.iter().map(|l| l.key.clone());
    if mine >= target {
        return TakePlan {
            take: orphans
                .iter()
                .take(room.min(orphan_quota))
                .map(|l| l.key.clone())
                .chain(waiting_keys)
                .collect(),
            steal: Vec::new(),
        };
    }
    let need = target - mine;

    let mut free: Vec<&Lease> = active
        .iter()
        .copied()
        .filter(|l| is_free(l) && !waiting.contains(l.key.as_str()))
        .collect();
    spread(&mut free, input.worker_id);
    if !free.is_empty() {
        let mut take: Vec<String> = free.iter().take(need).map(|l| l.key.clone()).collect();
        let orphans_taken = orphans.iter().filter(|l| take.contains(&l.key)).count();
        let extra: Vec<String> = orphans
            .iter()
            .filter(|l| !take.contains(&l.key))
            .take(
                room.saturating_sub(take.len())
                    .min(orphan_quota.saturating_sub(orphans_taken)),
            )
            .map(|l| l.key.clone())
            .collect();
        take.extend(extra);
        return TakePlan {
            take: take.into_iter().chain(waiting_keys).collect(),
            steal: Vec::new(),
        };
    }

    // One lease from each worker at least 2 ahead of this one, the busiest first: a
    // newcomer fills up from many holders at once, and none drops below the asker.
    let mut victims: Vec<(&str, usize)> = load
        .iter()
        .filter(|(worker, n)| **worker != input.worker_id && **n >= mine + 2)
        .map(|(w, n)| (*w, *n))
        .collect();
    // Among equally busy workers, each asker starts at a different one: newcomers that
    // ask together spread their requests instead of all draining the same holder.
    let rank = |victim: &str| {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (input.worker_id, victim).hash(&mut hasher);
        hasher.finish()
    };
    victims.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| rank(a.0).cmp(&rank(b.0))));
    let mut steal = Vec::new();
    for (victim, _) in victims.into_iter().take(need.min(input.max_steal)) {
        let mut theirs: Vec<&Lease> = active
            .iter()
            .copied()
            .filter(|l| l.owner.as_deref() == Some(victim) && !waiting.contains(l.key.as_str()))
            .collect();
        spread(&mut theirs, input.worker_id);
        steal.extend(theirs.first().map(|l| l.key.clone()));
    }
    TakePlan {
        take: waiting_keys.collect(),
        steal,
    }
}

/// Orders candidates by key, rotated by the worker id, so workers that start together
/// reach for different leases first instead of racing for the same one.
fn spread(leases: &mut [&Lease], worker_id: &str) {
    leases.sort_by(|a, b| a.key.cmp(&b.key));
    if leases.is_empty() {
        return;
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    worker_id.hash(&mut hasher);
    let offset = (hasher.finish() % leases.len() as u64) as usize;
    leases.rotate_left(offset);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::position::Checkpoint;

    fn lease(key: &str, owner: Option<&str>) -> Lease {
        let mut lease = Lease::new(key, Checkpoint::TrimHorizon, Vec::new());
        lease.owner = owner.map(str::to_string);
        lease
    }

    fn decide(me: &str, leases: &[Lease], expired: &[&str]) -> TakePlan {
        let expired: HashSet<String> = expired.iter().map(|s| s.to_string()).collect();
        plan(&TakeInput {
            worker_id: me,
            live_workers: &[],
            leases,
            expired: &expired,
            orphaned: &HashSet::new(),
            max_leases: usize::MAX,
            max_steal: 1,
        })
    }

    fn shards(owners: &[Option<&str>]) -> Vec<Lease> {
        owners
            .iter()
            .enumerate()
            .map(|(i, o)| lease(&format!("shard-{i}"), *o))
            .collect()
    }

    #[test]
    fn a_lone_worker_takes_everything() {
        let leases = shards(&[None; 6]);
        assert_eq!(decide("a", &leases, &[]).take.len(), 6);
    }

    #[test]
    fn workers_that_start_together_share_the_free_leases_from_the_first_pass() {
        let leases = shards(&[None; 6]);
        let plan = plan(&TakeInput {
            worker_id: "a",
            live_workers: &["b", "c"],
            leases: &leases,
            expired: &HashSet::new(),
            orphaned: &HashSet::new(),
            max_leases: usize::MAX,
            max_steal: 1,
        });
        assert_eq!(plan.take.len(), 2, "{plan:?}");
    }

    #[test]
    fn a_new_worker_steals_one_at_a_time_from_the_most_loaded() {
        let leases = shards(&[Some("a"), Some("a"), Some("a"), Some("b"), Some("b"), Some("b")]);
        let plan = decide("c", &leases, &[]);
        assert!(plan.take.is_empty());
        assert_eq!(plan.steal.len(), 1);
    }

    #[test]
    fn a_newcomer_asks_one_lease_of_each_busier_worker_at_once() {
        let leases = shards(&[
            Some("a"),
            Some("a"),
            Some("a"),
            Some("a"),
            Some("b"),
            Some("b"),
            Some("b"),
            Some("b"),
            Some("c"),
            Some("c"),
        ]);
        let plan = plan(&TakeInput {
            worker_id: "d",
            live_workers: &[],
            leases: &leases,
            expired: &HashSet::new(),
            orphaned: &HashSet::new(),
            max_leases: usize::MAX,
            max_steal: 5,
        });
        let mut holders: Vec<Option<&str>> = plan
            .steal
            .iter()
            .map(|k| leases.iter().find(|l| &l.key == k).and_then(|l| l.owner.as_deref()))
            .collect();
        holders.sort();
        assert_eq!(holders, vec![Some("a"), Some("b"), Some("c")], "{plan:?}");
    }

    #[test]
    fn orphans_are_shared_out_among_the_workers() {
        // a and b hold their share; four leases made late sat free for a pass.
        let mut leases = shards(&[Some("a"), Some("a"), Some("b"), Some("b")]);
        leases.extend((4..8).map(|i| lease(&format!("shard-{i}"), None)));
        let orphaned: HashSet<String> = (4..8).map(|i| format!("shard-{i}")).collect();
        let plan = plan(&TakeInput {
            worker_id: "a",
            live_workers: &["b"],
            leases: &leases,
            expired: &HashSet::new(),
            orphaned: &orphaned,
            max_leases: usize::MAX,
            max_steal: 1,
        });
        assert_eq!(plan.take.len(), 2, "half of the four for each of two workers: {plan:?}");
    }

    #[test]
    fn three_workers_converge_to_two_each() {
        let mut leases = shards(&[None; 6]);
        let workers = ["a", "b", "c"];
        for _round in 0..10 {
            for worker in workers {
                let plan = decide(worker, &leases, &[]);
                for key in plan.take.iter().chain(&plan.steal) {
                    if let Some(lease) = leases.iter_mut().find(|l| &l.key == key) {
                        lease.owner = Some(worker.to_string());
                    }
                }
            }
        }
        for worker in workers {
            assert_eq!(
                leases.iter().filter(|l| l.owner.as_deref() == Some(worker)).count(),
                2,
                "{leases:?}"
            );
        }
        // And nothing moves any more.
        for worker in workers {
            assert_eq!(decide(worker, &leases, &[]), TakePlan::default());
        }
    }

    #[test]
    fn an_imbalance_of_one_is_left_alone() {
        let leases = shards(&[Some("a"), Some("a"), Some("b"), Some("b"), Some("c")]);
        assert_eq!(decide("c", &leases, &[]), TakePlan::default());
    }

    #[test]
    fn expired_leases_are_free_and_preferred_over_stealing() {
        let leases = shards(&[Some("dead"), Some("dead"), Some("a"), Some("a")]);
        let plan = decide("b", &leases, &["shard-0", "shard-1"]);
        assert_eq!(plan.steal, Vec::<String>::new());
        let mut taken = plan.take.clone();
        taken.sort();
        assert_eq!(taken, vec!["shard-0".to_string(), "shard-1".to_string()]);
    }

    #[test]
    fn orphans_are_taken_by_anyone_with_room_whatever_the_balance() {
        // b holds its share (ceil(5 / 2)); a dead worker's lease sat free for a pass
        // beyond its expiry, left to a, below its share, which did not take it.
        let leases = shards(&[Some("dead"), Some("b"), Some("b"), Some("b"), Some("a")]);
        let expired = HashSet::from(["shard-0".to_string()]);
        let at = |orphaned: &HashSet<String>, max_leases: usize| {
            plan(&TakeInput {
                worker_id: "b",
                live_workers: &[],
                leases: &leases,
                expired: &expired,
                orphaned,
                max_leases,
                max_steal: 1,
            })
        };
        assert_eq!(
            at(&HashSet::new(), usize::MAX).take,
            Vec::<String>::new(),
            "at target, a fresh expiry is left to others"
        );
        let orphaned = HashSet::from(["shard-0".to_string()]);
        assert_eq!(at(&orphaned, usize::MAX).take, vec!["shard-0".to_string()]);
        assert_eq!(at(&orphaned, 3).take, Vec::<String>::new(), "but not past the cap");
    }

    #[test]
    fn finished_shards_do_not_count() {
        let mut leases = shards(&[Some("a"), Some("a"), None]);
        leases[0].checkpoint = Checkpoint::ShardEnd;
        leases[1].checkpoint = Checkpoint::ShardEnd;
        let plan = decide("b", &leases, &[]);
        assert_eq!(plan.take, vec!["shard-2".to_string()]);
    }

    #[test]
    fn max_leases_caps_the_target() {
        let leases = shards(&[None; 10]);
        let expired = HashSet::new();
        let plan = plan(&TakeInput {
            worker_id: "a",
            live_workers: &[],
            leases: &leases,
            expired: &expired,
            orphaned: &HashSet::new(),
            max_leases: 3,
            max_steal: 1,
        });
        assert_eq!(plan.take.len(), 3);
    }

    #[test]
    fn waiting_children_do_not_fill_a_capped_worker_and_parents_come_first() {
        // After a split of s0, two workers capped at one lease each took the children
        // first: counted, they would leave the parent to nobody.
        let mut leases = vec![
            lease("s0", Some("dead")),
            lease("s1", Some("a")),
            lease("s2", Some("b")),
        ];
        leases[1].parent_shard_ids = vec!["s0".into()];
        leases[2].parent_shard_ids = vec!["s0".into()];
        let expired: HashSet<String> = HashSet::from(["s0".to_string()]);
        let capped = |me: &str| {
            plan(&TakeInput {
                worker_id: me,
                live_workers: &[],
                leases: &leases,
                expired: &expired,
                orphaned: &HashSet::new(),
                max_leases: 1,
                max_steal: 1,
            })
        };
        assert_eq!(capped("a").take, vec!["s0".to_string()]);
        assert_eq!(capped("b").take, vec!["s0".to_string()]);
        // A fresh worker takes the parent before the waiting children.
        let mut free = vec![lease("s0", None), lease("s1", None), lease("s2", None)];
        free[1].parent_shard_ids = vec!["s0".into()];
        free[2].parent_shard_ids = vec!["s0".into()];
        let plan = plan(&TakeInput {
            worker_id: "c",
            live_workers: &[],
            leases: &free,
            expired: &HashSet::new(),
            orphaned: &HashSet::new(),
            max_leases: 1,
            max_steal: 1,
        });
        assert_eq!(plan.take.first().map(String::as_str), Some("s0"));
        assert!(!plan.steal.iter().any(|k| k != "s0"));
        // Once the parent finished, the children are working leases like any other.
        let mut done = free.clone();
        done[0].checkpoint = Checkpoint::ShardEnd;
        assert!(!is_waiting(&done[1], &done));
    }

    #[test]
    fn expiry_needs_the_counter_to_stand_still_for_the_failover_time() {
        let failover = Duration::from_secs(10);
        let start = Instant::now();
        let mut tracker = ExpiryTracker::default();
        let mut leases = shards(&[Some("a"), None]);
        assert!(
            tracker.observe(&leases, start, failover).is_empty(),
            "first sight is never expired"
        );
        leases[0].counter = 1;
        assert!(
            tracker
                .observe(&leases, start + Duration::from_secs(9), failover)
                .is_empty()
        );
        assert!(
            tracker
                .observe(&leases, start + Duration::from_secs(18), failover)
                .is_empty(),
            "moved at 9 s"
        );
        let expired = tracker.observe(&leases, start + Duration::from_secs(19), failover);
        assert_eq!(
            expired,
            HashSet::from(["shard-0".to_string()]),
            "unowned leases are free, not expired"
        );
    }

    #[test]
    fn owners_are_judged_by_the_worker_table_or_else_by_the_lease_counter() {
        use crate::membership::WorkerEntry;
        let (failover, grace) = (Duration::from_secs(10), Duration::from_secs(2));
        let start = Instant::now();
        let now = start + Duration::from_secs(30);
        let mut leases = vec![
            lease("unowned-long", None),
            lease("unowned-new", None),
            lease("mine-read", Some("me")),
            lease("mine-unread", Some("me")),
            lease("live", Some("alive")),
            lease("dead-long", Some("dead")),
            lease("dead-new", Some("dying")),
            lease("departed", Some("gone")),
            lease("stranger", Some("java")),
            lease("finished", None),
        ];
        leases[9].checkpoint = Checkpoint::ShardEnd;
        let mut tracker = ExpiryTracker::default();
        tracker.saw("unowned-long", 0, now - grace);
        tracker.saw("unowned-new", 0, now - grace / 2);
        tracker.saw("stranger", 0, now - failover - grace);
        let mut view = View::default();
        view.live.insert("alive".into(), WorkerEntry::default());
        view.dead.insert("dead".into(), (WorkerEntry::default(), grace));
        view.dead.insert("dying".into(), (WorkerEntry::default(), grace / 2));
        view.departed.insert("gone".into(), grace * 3);
        let judged = judge_owners(&OwnerJudgement {
            worker_id: "me",
            leases: &leases,
            view: &view,
            reading: &|key| key == "mine-read",
            tracker: &tracker,
            counters_still: &HashSet::from(["stranger".to_string()]),
            now,
            failover,
            grace,
        });
        let sorted = |keys: &HashSet<String>| {
            let mut keys: Vec<String> = keys.iter().cloned().collect();
            keys.sort_unstable();
            keys
        };
        assert_eq!(
            sorted(&judged.expired),
            ["dead-long", "dead-new", "departed", "mine-unread", "stranger"]
        );
        assert_eq!(
            sorted(&judged.orphaned),
            ["dead-long", "departed", "mine-unread", "stranger", "unowned-long"],
            "free for a pass beyond expiry; a dead worker's lease only once a pass went by"
        );
        assert!(judged.unknown_owner, "the stranger has no entry");
        assert_eq!(
            free_count(&leases, &judged.expired),
            7,
            "unowned and expired, not finished"
        );
    }
}
