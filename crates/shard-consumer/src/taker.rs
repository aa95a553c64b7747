//! The taker, the Java KCL's `LeaseTaker` in this worker's terms. At each pass it reads
//! the worker table ([`crate::membership`] judges who is alive), hands over leases
//! others asked this worker for, collects those it asked for, and scans the lease table
//! only when there may be something to take: a worker died or left, leases were made
//! for others, it is below its share, or a safety interval passed. From a scan,
//! [`assignment`] decides which leases are free and what to take or ask for; a lease
//! taken is read at once ([`ShardReaders::start`]).
//!
//! What this worker tells others goes through its entry in the worker table (written by
//! the heartbeat): how many shards it reads, the leases it asks for, and a lease epoch
//! bumped when it made or freed leases nobody took.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pipeline_runtime::Metrics;
use pipeline_runtime::metrics::names::{self, dimension::APPLICATION};
use pipeline_runtime::retry::{RetryError, RetryPolicy, retry};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::assignment::{self, ExpiryTracker, OwnerJudgement, TakeInput};
use crate::config::ConsumerConfig;
use crate::holding::{Liveness, lock};
use crate::lease::Lease;
use crate::lease_store::{AfterCondition, LeaseStore, decide_after_condition};
use crate::lease_table::LeaseTableError;
use crate::membership::{Membership, View, WorkerEntry};
use crate::processor::ProcessorFactory;
use crate::readers::ShardReaders;
use crate::source::Source;

/// Without any event, each worker scans the lease table this often (give or take a
/// fifth, so a fleet does not scan together): a safety net for leases nobody announced.
const SAFETY_SCAN: Duration = Duration::from_secs(300);

/// A worker entry whose heartbeat stood still this many failover times past its death
/// is deleted by the leader (its leases were taken long before).
const FORGET_DEAD_AFTER: u32 = 10;

/// A lease asked for and not handed over within this many failover times is asked for
/// no more (its holder may be busy flushing, or have other plans).
const WANT_PATIENCE: u32 = 2;

/// A shard whose task panicked here is left to other workers this many failover times.
const PANIC_PATIENCE: u32 = 3;

/// A lease this worker asked another for.
#[derive(Debug, Clone)]
struct Want {
    holder: String,
    since: Instant,
}

pub(crate) struct Taker {
    store: Arc<dyn LeaseStore>,
    config: Arc<ConsumerConfig>,
    metrics: Metrics,
    liveness: Arc<Liveness>,
    /// Cancels the taker's retries once the worker stops its shards.
    stopping: CancellationToken,
    /// This worker's entry, as the heartbeat writes it.
    entry: Arc<Mutex<WorkerEntry>>,
    membership: Membership,
    view: View,
    /// Lease counters, for owners without a worker entry.
    tracker: ExpiryTracker,
    last_scan: Option<Instant>,
    next_safety_scan: Instant,
    /// Leases whose owner has no entry were seen: scan again a failover time later.
    recheck_at: Option<Instant>,
    /// Free leases the last scan found.
    free_seen: u64,
    /// Something happened that calls for a scan, not done yet (kept until a scan succeeds).
    scan_wanted: bool,
    wants: BTreeMap<String, Want>,
}

impl Taker {
    pub fn new(
        store: Arc<dyn LeaseStore>,
        config: Arc<ConsumerConfig>,
        metrics: Metrics,
        liveness: Arc<Liveness>,
        stopping: CancellationToken,
    ) -> Self {
        let entry = WorkerEntry {
            worker_id: config.worker_id.clone(),
            ..WorkerEntry::default()
        };
        Self {
            store,
            config,
            metrics,
            liveness,
            stopping,
            entry: Arc::new(Mutex::new(entry)),
            membership: Membership::default(),
            view: View::default(),
            tracker: ExpiryTracker::default(),
            last_scan: None,
            next_safety_scan: Instant::now(),
            recheck_at: None,
            free_seen: 0,
            scan_wanted: true,
            wants: BTreeMap::new(),
        }
    }

    /// This worker's entry in the worker table, shared with the heartbeat that writes it.
    pub fn entry(&self) -> Arc<Mutex<WorkerEntry>> {
        self.entry.clone()
    }

    fn application(&self) -> &str {
        &self.config.application
    }

    fn me(&self) -> &str {
        &self.config.worker_id
    }

    /// Whether this worker leads (as of the last read of the worker table): it syncs
    /// the shards and deletes long-dead workers' entries.
    pub fn is_leader(&self) -> bool {
        self.view.leader().is_none_or(|leader| leader == self.me())
    }

    /// Brings this worker's entry up to date for the next heartbeat: `load` shards read.
    pub fn publish(&self, load: u64) {
        let mut entry = lock(&self.entry);
        entry.leases = load;
        entry.wants = self.wants.keys().cloned().collect();
    }

    /// Leases were made, or freed, that nobody took: others are told to look (through
    /// the entry), and this worker looks too.
    pub fn announce(&mut self, untaken: usize) {
        if untaken > 0 {
            lock(&self.entry).lease_epoch += 1;
            self.scan_wanted = true;
        }
    }

    /// Something may have freed a lease: the next pass scans.
    pub fn want_scan(&mut self) {
        self.scan_wanted = true;
    }

    /// This worker released `key` at `counter`: free since now. If nobody takes it
    /// within a pass, it is an orphan that this worker takes too, whatever its share
    /// (its first scan would otherwise start that clock only when it sees the counter).
    pub fn released(&mut self, key: &str, counter: u64) {
        self.tracker.saw(key, counter, Instant::now());
    }

    /// The leases this worker asked for, asked for no more (it stops).
    pub fn give_up_wants(&mut self) -> Vec<String> {
        std::mem::take(&mut self.wants).into_keys().collect()
    }

    /// One taker pass: read who is alive, hand over and collect asked-for leases, and
    /// scan to take when there may be something to take.
    pub async fn pass<S: Source, F: ProcessorFactory<S::Record>>(
        &mut self,
        readers: &mut ShardReaders<S, F>,
    ) -> Result<(), LeaseTableError> {
        self.read_workers().await?;
        self.publish(readers.load());
        if !self.liveness.is_current(Instant::now()) {
            // Not alive in others' eyes: whatever this worker held may be theirs now.
            self.scan_wanted = true;
            return Ok(());
        }
        self.hand_over_asked(readers);
        self.collect_wanted(readers).await;
        if self.scan_due(readers.load()) {
            self.scan_and_take(readers).await?;
        }
        if self.is_leader() {
            self.forget_the_long_dead().await;
        }
        self.publish(readers.load());
        Ok(())
    }

    /// Reads the worker table and judges who is alive.
    async fn read_workers(&mut self) -> Result<(), LeaseTableError> {
        let store = &self.store;
        let entries = retry(&RetryPolicy::CONTROL_READ, &self.stopping, || store.workers())
            .await
            .map_err(RetryError::into_error)?;
        let me = lock(&self.entry).clone();
        self.view = self
            .membership
            .observe(&me, entries, Instant::now(), self.config.failover);
        self.scan_wanted |= self.view.changed;
        Ok(())
    }

    /// Hands over leases live workers asked for, while it still evens the load out.
    fn hand_over_asked<S: Source, F: ProcessorFactory<S::Record>>(&self, readers: &ShardReaders<S, F>) {
        let held = readers.handable();
        let mut load = readers.load();
        let floor = self.view.floor_share();
        for (key, asker, asker_load) in self.view.requests_for(&held) {
            // Never below the asker's load plus one (no ping-pong), nor below the
            // floor share (several newcomers asking at once must not drain one holder).
            if load <= asker_load + 1 || load <= floor {
                continue;
            }
            if readers.hand_off(&key, &asker) {
                tracing::info!(application = %self.application(), shard_id = %key, to = %asker, "handing the lease over on request");
                load -= 1;
            }
        }
    }

    /// Leases asked for: handed over (start reading), free (take), or given up on. A
    /// failed read keeps the request for the next pass.
    async fn collect_wanted<S: Source, F: ProcessorFactory<S::Record>>(&mut self, readers: &mut ShardReaders<S, F>) {
        let failover = self.config.failover;
        for (key, want) in self.wants.clone() {
            if readers.is_reading(&key) {
                self.wants.remove(&key);
                continue;
            }
            let lease = match self.store.get(&key).await {
                Ok(Some(lease)) => lease,
                Ok(None) => {
                    self.wants.remove(&key);
                    continue;
                }
                Err(error) => {
                    tracing::debug!(shard_id = %key, %error, "reading a lease asked for failed; next pass");
                    continue;
                }
            };
            match lease.owner.as_deref() {
                // Handed over, maybe while this worker was stalled and others saw it
                // dead: its own conditional write makes the lease its own again, and
                // fails if one of them took it meanwhile (a take from a scan that saw
                // the hand-over fails in turn).
                Some(owner) if owner == self.me() => {
                    self.wants.remove(&key);
                    if let Err(error) = self.take_as(readers, &lease, Some(&want.holder)).await {
                        tracing::debug!(shard_id = %key, %error, "confirming a lease handed over failed; next scan");
                        self.scan_wanted = true;
                    }
                }
                None => {
                    self.wants.remove(&key);
                    if let Err(error) = self.take(readers, &lease).await {
                        tracing::debug!(shard_id = %key, %error, "taking a released lease failed; next scan");
                        self.scan_wanted = true;
                    }
                }
                // Not ours yet: its holder (or whoever it went to meanwhile) may still
                // hand it over, from an older copy of this worker's entry.
                Some(_) if want.since.elapsed() < failover * WANT_PATIENCE => {}
                Some(_) => {
                    self.wants.remove(&key);
                    // A hand-over that comes after this is found by the scan (a lease of
                    // this worker's that it does not read).
                    self.scan_wanted = true;
                }
            }
        }
    }

    /// Whether the lease table is worth a scan now, for a worker reading `load` shards.
    fn scan_due(&self, load: u64) -> bool {
        let config = &self.config;
        let now = Instant::now();
        let Some(last) = self.last_scan else {
            return true;
        };
        if self.scan_wanted || now >= self.next_safety_scan || self.recheck_at.is_some_and(|at| now >= at) {
            return true;
        }
        let since = now.saturating_duration_since(last);
        // Free leases seen and not taken (a take failed, others were slower, or all were
        // at their share): look again, and take them as orphans if they are still free.
        if self.free_seen > 0 && since >= config.taker_interval / 2 {
            return true;
        }
        let target = self.view.target(self.free_seen, config.max_leases_per_worker);
        load < target
            && self.wants.is_empty()
            && since >= config.failover
            && self.view.busiest_other(self.me()).is_some_and(|(_, n)| n >= load + 2)
    }

    async fn scan_and_take<S: Source, F: ProcessorFactory<S::Record>>(
        &mut self,
        readers: &mut ShardReaders<S, F>,
    ) -> Result<(), LeaseTableError> {
        let config = self.config.clone();
        let store = &self.store;
        // A failed scan costs a whole pass, and free leases wait for it: retried at once.
        let leases = retry(&RetryPolicy::CONTROL_READ, &self.stopping, || store.list())
            .await
            .map_err(RetryError::into_error)?;
        // What made this scan wanted is in it; news the re-read below brings (leases made
        // after the list) calls for the next one.
        self.scan_wanted = false;
        // A worker that lapsed and came back heartbeats before it takes anything, so a
        // lease this scan saw it take (or confirm after a hand-over) is matched by a
        // heartbeat that a read of the worker table made now sees. Judged by the read
        // before the scan, such a worker could still look dead, and its lease free.
        if leases.iter().any(|l| {
            !l.checkpoint.is_shard_end()
                && l.owner
                    .as_deref()
                    .is_some_and(|o| self.view.is_dead(o) || self.view.departed.contains_key(o))
        }) {
            self.read_workers().await?;
        }
        let now = Instant::now();
        self.last_scan = Some(now);
        let jitter = SAFETY_SCAN.as_millis() as u64 / 5;
        self.next_safety_scan =
            now + SAFETY_SCAN - Duration::from_millis(jitter) + Duration::from_millis(fastrand::u64(..=2 * jitter));
        let counters_still = self.tracker.observe(&leases, now, config.failover);
        let judged = assignment::judge_owners(&OwnerJudgement {
            worker_id: self.me(),
            leases: &leases,
            view: &self.view,
            reading: &|key| readers.is_reading(key),
            tracker: &self.tracker,
            counters_still: &counters_still,
            now,
            failover: config.failover,
            grace: config.taker_interval,
        });
        self.recheck_at = judged.unknown_owner.then_some(now + config.failover);
        let held = readers.held();
        let live_workers: Vec<&str> = self.view.live.keys().map(String::as_str).collect();
        let plan = assignment::plan(&TakeInput {
            worker_id: self.me(),
            live_workers: &live_workers,
            leases: &leases,
            expired: &judged.expired,
            orphaned: &judged.orphaned,
            max_leases: config.max_leases_per_worker,
            max_steal: config.max_leases_to_steal,
        });
        self.free_seen = assignment::free_count(&leases, &judged.expired);
        for key in &plan.take {
            let Some(lease) = leases.iter().find(|l| &l.key == key) else {
                continue;
            };
            // A shard whose task panicked here is left to other workers for a while: a
            // bug that one record triggers must not loop on one worker at every take.
            // One task per shard: a lease lost here is taken again only once its old
            // task ended (its in-flight checkpoint could otherwise land on the new take).
            if held.contains(key)
                || readers.is_reading(key)
                || readers.panicked_within(key, config.failover * PANIC_PATIENCE)
            {
                continue;
            }
            if self.take(readers, lease).await? {
                self.free_seen = self.free_seen.saturating_sub(1);
            }
        }
        for key in plan.steal {
            if self.wants.len() >= config.max_leases_to_steal {
                break;
            }
            if let Some(holder) = leases.iter().find(|l| l.key == key).and_then(|l| l.owner.clone()) {
                tracing::info!(application = %self.application(), shard_id = %key, from = %holder, "asking for a lease, toward balance");
                self.wants.insert(key, Want { holder, since: now });
            }
        }
        Ok(())
    }

    /// Takes `lease` (as last read) and starts reading it; returns whether it was taken.
    pub async fn take<S: Source, F: ProcessorFactory<S::Record>>(
        &self,
        readers: &mut ShardReaders<S, F>,
        lease: &Lease,
    ) -> Result<bool, LeaseTableError> {
        self.take_as(readers, lease, None).await
    }

    /// Takes `lease` (as last read), or confirms it when `handed_by` handed it over;
    /// starts reading it; returns whether it is this worker's.
    async fn take_as<S: Source, F: ProcessorFactory<S::Record>>(
        &self,
        readers: &mut ShardReaders<S, F>,
        lease: &Lease,
        handed_by: Option<&str>,
    ) -> Result<bool, LeaseTableError> {
        /// A take that failed before it reached the table is tried again at once (the
        /// lease waits otherwise for the next scan), a few times.
        const ATTEMPTS: u32 = 3;
        let store = &self.store;
        let me = self.me();
        let era = self.liveness.era();
        let mut backoff = crate::backoff::Backoff::new(Duration::from_millis(50), Duration::from_millis(500));
        let mut taken = None;
        for attempt in 1..=ATTEMPTS {
            let error = match store.take(lease, me).await {
                Ok(counter) => {
                    taken = Some((counter, lease.checkpoint.clone()));
                    break;
                }
                Err(error) if error.is_condition_failed() || error.is_retryable() => error,
                Err(error) => return Err(error),
            };
            // The take may have landed before its answer was lost: the table decides.
            match store.get(&lease.key).await {
                Ok(now) => match (decide_after_condition(now.as_ref(), me), &now) {
                    // Ours at the counter our take wrote: it landed.
                    (AfterCondition::Held { counter, checkpoint }, _) if counter == lease.counter + 1 => {
                        taken = Some((counter, checkpoint));
                        break;
                    }
                    // Untouched: the take never reached the table.
                    (_, Some(now)) if now.counter == lease.counter && error.is_retryable() && attempt < ATTEMPTS => {}
                    // Someone else's now, or ours at another counter (an older holding
                    // of ours): not taken now.
                    _ => break,
                },
                Err(reread) => {
                    tracing::debug!(shard_id = %lease.key, %error, %reread, "lease take unsettled; next scan");
                    break;
                }
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
        let Some((counter, checkpoint)) = taken else {
            tracing::debug!(shard_id = %lease.key, "lease not taken (another worker was first, or the table did not answer)");
            return Ok(false);
        };
        let application = [(APPLICATION, self.application())];
        match handed_by {
            Some(holder) => {
                self.metrics.count(names::LEASES_STOLEN, 1, &application);
                tracing::info!(application = %self.application(), shard_id = %lease.key, from = %holder, "lease handed over to this worker");
            }
            None => {
                self.metrics.count(names::LEASES_TAKEN, 1, &application);
                tracing::info!(application = %self.application(), shard_id = %lease.key, from = ?lease.owner, "lease taken");
            }
        }
        let mut taken = lease.clone();
        taken.checkpoint = checkpoint;
        readers.start(&taken, counter, era);
        Ok(true)
    }

    /// The leader deletes entries of workers dead for long; their leases went long ago.
    async fn forget_the_long_dead(&self) {
        let failover = self.config.failover;
        for (id, (entry, beyond)) in &self.view.dead {
            if *beyond >= failover * FORGET_DEAD_AFTER {
                match self.store.remove_worker(id, Some(entry.heartbeat)).await {
                    Ok(()) => {
                        tracing::info!(application = %self.application(), worker_id = %id, "entry of a dead worker deleted")
                    }
                    Err(error) => tracing::debug!(worker_id = %id, %error, "deleting a dead worker's entry failed"),
                }
            }
        }
    }
}
