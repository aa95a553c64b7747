//! The worker. A heartbeat task keeps this worker's entry in the worker table fresh
//! ([`crate::heartbeat`]): that one write a renewal interval keeps every lease it holds.
//! At each taker pass the worker reads the worker table ([`crate::membership`] judges
//! who is alive), hands over leases others asked for, collects those it asked for, and
//! scans the lease table only when there may be something to take: a worker died or
//! left, leases were made for others, it is below its share, or a safety interval
//! passed ([`crate::assignment`] decides what to take). The live worker with the
//! smallest id keeps the lease table in step with the stream's shards
//! ([`crate::shard_sync`] decides); a worker that reads a shard to its end makes the
//! children's leases and takes them. Each held shard is read by a task of its own
//! ([`crate::shard`]). On stop every shard flushes, every lease is released and the
//! worker's entry deleted, so others take the leases at their next pass.
//!
//! Stealing is a hand-over: a worker below its share asks (in its entry) for a lease of
//! the busiest worker, which flushes that shard, checkpoints and writes the new owner
//! itself. A shard never has two readers, even for a moment, and nothing checkpointed
//! is read twice.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use pipeline_runtime::Metrics;
use pipeline_runtime::metrics::names::{self, dimension::APPLICATION};
use pipeline_runtime::retry::{RetryError, RetryPolicy, retry};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::assignment::{self, ExpiryTracker, TakeInput};
use crate::config::{ConfigError, ConsumerConfig};
use crate::error::{AwsError, Classified, ErrorKind};
use crate::heartbeat::Heartbeat;
use crate::holding::{Holding, Holdings, Liveness, lock};
use crate::lease::Lease;
use crate::lease_store::{AfterCondition, LeaseStore, decide_after_condition};
use crate::lease_table::LeaseTableError;
use crate::membership::{Membership, View, WorkerEntry};
use crate::processor::ProcessorFactory;
use crate::shard::{ShardError, ShardOutcome, ShardTask};
use crate::shard_sync::plan_shard_leases;
use crate::source::Source;

/// Why a consumer stopped before it was asked to.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("lease table {table}: {source}")]
    LeaseTable { table: String, source: LeaseTableError },
    #[error("listing shards of {stream}: {}", .source.explain())]
    ListShards { stream: String, source: AwsError },
    #[error(transparent)]
    Shard(#[from] ShardError),
}

impl Classified for ConsumerError {
    fn kind(&self) -> ErrorKind {
        match self {
            ConsumerError::Config(_) | ConsumerError::Shard(_) => ErrorKind::Fatal,
            ConsumerError::LeaseTable { source, .. } => source.kind(),
            ConsumerError::ListShards { source, .. } => source.kind,
        }
    }
}

impl ConsumerError {
    /// Throttling or a server error: worth another try, unlike a missing stream or a
    /// denied call.
    pub fn is_retryable(&self) -> bool {
        self.kind().is_retryable()
    }
}

/// A shard task's end: its shard, the holding's generation, how it ended and, when it
/// stopped the consumer, why.
type ShardEvent = (String, u64, ShardOutcome, Option<ShardError>);

/// Without any event, each worker scans the lease table this often (give or take a
/// fifth, so a fleet does not scan together): a safety net for leases nobody announced.
const SAFETY_SCAN: Duration = Duration::from_secs(300);

/// A worker entry whose heartbeat stood still this many failover times past its death
/// is deleted by the leader (its leases were taken long before).
const FORGET_DEAD_AFTER: u32 = 10;

/// A lease asked for and not handed over within this many failover times is asked for
/// no more (its holder may be busy flushing, or have other plans).
const WANT_PATIENCE: u32 = 2;

/// A lease-based consumer of one stream, for one application.
pub struct Consumer<S, F> {
    source: S,
    store: Arc<dyn LeaseStore>,
    factory: Arc<F>,
    config: Arc<ConsumerConfig>,
    metrics: Metrics,
}

impl<S: Source, F: ProcessorFactory<S::Record>> Consumer<S, F> {
    pub fn new(source: S, store: impl LeaseStore, factory: F, config: ConsumerConfig, metrics: Metrics) -> Self {
        Self::with_store(source, Arc::new(store), factory, config, metrics)
    }

    /// A consumer on a lease store shared with others (the simulation's).
    pub fn with_store(
        source: S,
        store: Arc<dyn LeaseStore>,
        factory: F,
        config: ConsumerConfig,
        metrics: Metrics,
    ) -> Self {
        Self {
            source,
            store,
            factory: Arc::new(factory),
            config: Arc::new(config),
            metrics,
        }
    }

    fn table_error(&self) -> impl Fn(LeaseTableError) -> ConsumerError + '_ {
        |source| ConsumerError::LeaseTable {
            table: self.store.name().to_string(),
            source,
        }
    }

    /// Runs until `shutdown`: then every shard task flushes through its processor,
    /// every held lease is released so other workers take it at once, and this worker's
    /// entry is deleted. Returns an error when the consumer cannot go on (a failure no
    /// retry fixes), after stopping every shard and releasing the leases the same way.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ConsumerError> {
        self.config.validate()?;
        // Start-up steps retry passing failures for a while; anything else stops the start.
        let started = retry(&RetryPolicy::START, &shutdown, || {
            self.store
                .ensure_exists(self.config.create_lease_table)
                .map(|r| r.map_err(self.table_error()))
        })
        .await;
        match started {
            Ok(()) => {}
            Err(RetryError::Stopped { .. }) => return Ok(()),
            Err(RetryError::Failed { error, .. }) => return Err(error),
        }
        let mut worker = Worker::new(&self);
        let heartbeat = Heartbeat {
            store: self.store.clone(),
            application: self.config.application.clone(),
            entry: worker.entry.clone(),
            liveness: worker.liveness.clone(),
            interval: self.config.renewal_interval,
            metrics: self.metrics.clone(),
        };
        // Known alive before anything is taken: a lease is only as good as its holder's heartbeat.
        match retry(&RetryPolicy::START, &shutdown, || {
            heartbeat.beat().map(|r| r.map_err(self.table_error()))
        })
        .await
        {
            Ok(()) => {}
            Err(RetryError::Stopped { .. }) => return Ok(()),
            Err(RetryError::Failed { error, .. }) => return Err(error),
        }
        let created = Mutex::new(0);
        let synced = retry(&RetryPolicy::START, &shutdown, || async {
            let mut made = Vec::new();
            let synced = worker.sync_shards(&mut made).await;
            *lock(&created) += made.len();
            synced
        })
        .await;
        worker.announce(created.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner));
        match synced {
            Ok(()) => {}
            Err(RetryError::Stopped { .. }) => {
                worker.leave().await;
                return Ok(());
            }
            Err(RetryError::Failed { error, .. }) => {
                worker.leave().await;
                return Err(error);
            }
        }
        tracing::info!(
            application = %self.config.application,
            worker_id = %self.config.worker_id,
            source = %self.source.describe(),
            lease_table = %self.store.name(),
            "consumer started"
        );
        let heartbeat_stop = CancellationToken::new();
        // Spawned tasks log inside the caller's span (a service's, a simulated worker's).
        let heartbeat = AbortOnDrop(tokio::spawn(heartbeat.run(heartbeat_stop.clone()).in_current_span()));

        let mut take = tokio::time::interval(self.config.taker_interval);
        let mut sync = tokio::time::interval(self.config.shard_sync_interval);
        for timer in [&mut take, &mut sync] {
            timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
        }
        sync.tick().await;
        let failure = loop {
            tokio::select! {
                // Fixed order (not tokio's random one), so a simulation replays exactly.
                biased;
                () = shutdown.cancelled() => break None,
                Some((shard_id, generation, outcome, error)) = worker.events.1.recv() => {
                    if let Some(error) = error {
                        break Some(error.into());
                    }
                    worker.shard_finished(&shard_id, generation, outcome).await;
                }
                _ = take.tick() => {
                    if let Err(error) = worker.pass().await {
                        let error = (self.table_error())(error);
                        if error.kind().of_own_request() == ErrorKind::Fatal {
                            break Some(error);
                        }
                        tracing::warn!(%error, "lease taking failed");
                    }
                }
                _ = sync.tick() => {
                    if worker.is_leader() {
                        let mut created = Vec::new();
                        let synced = worker.sync_shards(&mut created).await;
                        worker.announce(created.len());
                        match synced {
                            Ok(()) => {}
                            Err(error) if error.kind().of_own_request() == ErrorKind::Fatal => break Some(error),
                            Err(error) => tracing::warn!(%error, "shard sync failed"),
                        }
                    }
                }
            }
        };
        if let Some(error) = &failure {
            // A process that cannot work stops at once: every shard gives up what it
            // has not made durable (the next owner reads it again) and the leases are
            // released, so other workers take them while this one is restarted.
            tracing::error!(application = %self.config.application, %error, "stopping the consumer");
            worker.abandon();
        }
        worker.stop_shards().await;
        worker.release_all().await;
        heartbeat_stop.cancel();
        let _ = heartbeat.join().await;
        worker.leave().await;
        match failure {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

/// A task that dies with its owner: a worker dropped without stopping (a killed process,
/// an aborted task) must leave no heartbeat or reader behind, or its leases would live
/// on with nobody reading.
struct AbortOnDrop(JoinHandle<()>);

impl AbortOnDrop {
    async fn join(mut self) -> Result<(), tokio::task::JoinError> {
        (&mut self.0).await
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A lease this worker asked another for.
#[derive(Debug, Clone)]
struct Want {
    holder: String,
    since: Instant,
}

struct Worker<'a, S, F> {
    consumer: &'a Consumer<S, F>,
    held: Holdings,
    tasks: BTreeMap<String, (u64, AbortOnDrop)>,
    shard_tasks_stop: CancellationToken,
    events: (mpsc::UnboundedSender<ShardEvent>, mpsc::UnboundedReceiver<ShardEvent>),
    generation: u64,
    /// The consumer stops on a failure: shard tasks give their work up.
    abandoned: bool,
    /// When a shard's task last panicked on this worker.
    panicked: BTreeMap<String, Instant>,
    liveness: Arc<Liveness>,
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

impl<'a, S: Source, F: ProcessorFactory<S::Record>> Worker<'a, S, F> {
    fn new(consumer: &'a Consumer<S, F>) -> Self {
        Self {
            consumer,
            held: Holdings::default(),
            tasks: BTreeMap::new(),
            shard_tasks_stop: CancellationToken::new(),
            events: mpsc::unbounded_channel(),
            generation: 0,
            abandoned: false,
            panicked: BTreeMap::new(),
            liveness: Arc::new(Liveness::new(consumer.config.failover)),
            entry: Arc::new(Mutex::new(WorkerEntry {
                worker_id: consumer.config.worker_id.clone(),
                ..WorkerEntry::default()
            })),
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

    fn application(&self) -> &str {
        &self.consumer.config.application
    }

    fn me(&self) -> &str {
        &self.consumer.config.worker_id
    }

    fn count(&self, metric: &str) {
        self.consumer
            .metrics
            .count(metric, 1, &[(APPLICATION, self.application())]);
    }

    /// The shards this worker reads (not waiting for a parent, not being handed over).
    fn load(&self) -> u64 {
        lock(&self.held).values().filter(|h| h.is_working()).count() as u64
    }

    /// Brings this worker's entry up to date for the next heartbeat.
    fn publish(&self) {
        let load = self.load();
        let mut entry = lock(&self.entry);
        entry.leases = load;
        entry.wants = self.wants.keys().cloned().collect();
    }

    /// Leases were made, or freed, that nobody took: others are told to look (through
    /// the entry), and this worker looks too.
    fn announce(&mut self, untaken: usize) {
        if untaken > 0 {
            lock(&self.entry).lease_epoch += 1;
            self.scan_wanted = true;
        }
    }

    fn is_leader(&self) -> bool {
        self.view.leader().is_none_or(|leader| leader == self.me())
    }

    /// Creates leases for shards that have none, and deletes finished leases that
    /// nothing needs any more ([`plan_shard_leases`] decides); adds the leases it made
    /// to `created` (also those made before a failure, and those another worker made
    /// meanwhile: a create whose answer was lost looks like one).
    async fn sync_shards(&self, created: &mut Vec<Lease>) -> Result<(), ConsumerError> {
        let consumer = self.consumer;
        let shards = consumer
            .source
            .list_shards()
            .await
            .map_err(|source| ConsumerError::ListShards {
                stream: consumer.source.describe(),
                source,
            })?;
        let leases = retry(&RetryPolicy::CONTROL_READ, &self.shard_tasks_stop, || {
            consumer.store.list()
        })
        .await
        .map_err(|e| (consumer.table_error())(e.into_error()))?;
        let plan = plan_shard_leases(&shards, &leases, consumer.config.initial_position);
        let stop = &self.shard_tasks_stop;
        for lease in plan.create {
            let made = retry(&RetryPolicy::CONTROL_READ, stop, || consumer.store.create(&lease))
                .await
                .map_err(|e| (consumer.table_error())(e.into_error()))?;
            if made {
                tracing::info!(application = %self.application(), shard_id = %lease.key, checkpoint = %lease.checkpoint, parents = ?lease.parent_shard_ids, "lease created");
            }
            created.push(lease);
        }
        for key in &plan.delete {
            retry(&RetryPolicy::CONTROL_READ, stop, || consumer.store.delete_finished(key))
                .await
                .map_err(|e| (consumer.table_error())(e.into_error()))?;
            tracing::info!(application = %self.application(), shard_id = %key, "finished lease deleted");
        }
        Ok(())
    }

    /// One taker pass: read who is alive, hand over and collect asked-for leases, and
    /// scan to take when there may be something to take.
    async fn pass(&mut self) -> Result<(), LeaseTableError> {
        self.read_workers().await?;
        self.publish();
        if !self.liveness.is_current(Instant::now()) {
            // Not alive in others' eyes: whatever this worker held may be theirs now.
            self.scan_wanted = true;
            return Ok(());
        }
        self.hand_over_asked();
        self.collect_wanted().await;
        if self.scan_due() {
            self.scan_and_take().await?;
        }
        if self.is_leader() {
            self.forget_the_long_dead().await;
        }
        self.publish();
        Ok(())
    }

    /// Reads the worker table and judges who is alive.
    async fn read_workers(&mut self) -> Result<(), LeaseTableError> {
        let consumer = self.consumer;
        let entries = retry(&RetryPolicy::CONTROL_READ, &self.shard_tasks_stop, || {
            consumer.store.workers()
        })
        .await
        .map_err(RetryError::into_error)?;
        let me = lock(&self.entry).clone();
        self.view = self
            .membership
            .observe(&me, entries, Instant::now(), consumer.config.failover);
        self.scan_wanted |= self.view.changed;
        Ok(())
    }

    /// Hands over leases live workers asked for, while it still evens the load out.
    fn hand_over_asked(&mut self) {
        let held: BTreeSet<String> = lock(&self.held)
            .values()
            .filter(|h| h.is_working() && self.tasks.contains_key(&h.key))
            .map(|h| h.key.clone())
            .collect();
        let mut load = self.load();
        let floor = self.view.floor_share();
        for (key, asker, asker_load) in self.view.requests_for(&held) {
            // Never below the asker's load plus one (no ping-pong), nor below the
            // floor share (several newcomers asking at once must not drain one holder).
            if load <= asker_load + 1 || load <= floor {
                continue;
            }
            if let Some(holding) = lock(&self.held).get(&key) {
                tracing::info!(application = %self.application(), shard_id = %key, to = %asker, "handing the lease over on request");
                holding.hand_off(&asker);
                load -= 1;
            }
        }
    }

    /// Leases asked for: handed over (start reading), free (take), or given up on. A
    /// failed read keeps the request for the next pass.
    async fn collect_wanted(&mut self) {
        let consumer = self.consumer;
        let failover = consumer.config.failover;
        for (key, want) in self.wants.clone() {
            if self.tasks.contains_key(&key) {
                self.wants.remove(&key);
                continue;
            }
            let lease = match consumer.store.get(&key).await {
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
                    if let Err(error) = self.take_as(&lease, Some(&want.holder)).await {
                        tracing::debug!(shard_id = %key, %error, "confirming a lease handed over failed; next scan");
                        self.scan_wanted = true;
                    }
                }
                None => {
                    self.wants.remove(&key);
                    if let Err(error) = self.take(&lease).await {
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

    /// Whether the lease table is worth a scan now.
    fn scan_due(&self) -> bool {
        let config = &self.consumer.config;
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
        let mine = self.load();
        let target = self.view.target(self.free_seen, config.max_leases_per_worker);
        mine < target
            && self.wants.is_empty()
            && since >= config.failover
            && self.view.busiest_other(self.me()).is_some_and(|(_, n)| n >= mine + 2)
    }

    async fn scan_and_take(&mut self) -> Result<(), LeaseTableError> {
        let consumer = self.consumer;
        let config = &consumer.config;
        // A failed scan costs a whole pass, and free leases wait for it: retried at once.
        let leases = retry(&RetryPolicy::CONTROL_READ, &self.shard_tasks_stop, || {
            consumer.store.list()
        })
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
        // A free lease is an orphan once a pass went by without a worker below its share
        // taking it; a dead worker's lease once a pass went by after others saw it dead.
        let grace = config.taker_interval;
        let mut expired = HashSet::new();
        let mut orphaned = HashSet::new();
        let mut unknown_owner = false;
        for lease in leases.iter().filter(|l| !l.checkpoint.is_shard_end()) {
            let key = lease.key.clone();
            match lease.owner.as_deref() {
                None => {
                    if self.tracker.still_for(&key, now).is_some_and(|still| still >= grace) {
                        orphaned.insert(key);
                    }
                }
                // Ours in the table but not read here (a task that ended without releasing):
                // nobody else takes it while this worker lives, so take it back.
                Some(owner) if owner == self.me() => {
                    if !self.tasks.contains_key(&key) {
                        expired.insert(key.clone());
                        orphaned.insert(key);
                    }
                }
                Some(owner) if self.view.is_live(owner) => {}
                Some(owner) => {
                    let dead_for = self.view.dead.get(owner).map(|(_, beyond)| *beyond);
                    let dead_for = match dead_for.or_else(|| self.view.departed.get(owner).copied()) {
                        Some(beyond) => Some(beyond),
                        None => {
                            // No entry: a worker of another kind, or one whose entry is
                            // not visible yet. Judged by the lease's own counter.
                            unknown_owner = true;
                            counters_still.contains(&key).then(|| {
                                self.tracker
                                    .still_for(&key, now)
                                    .map_or(Duration::ZERO, |still| still.saturating_sub(config.failover))
                            })
                        }
                    };
                    if let Some(beyond) = dead_for {
                        if beyond >= grace {
                            orphaned.insert(key.clone());
                        }
                        expired.insert(key);
                    }
                }
            }
        }
        self.recheck_at = unknown_owner.then_some(now + config.failover);
        let held: HashSet<String> = lock(&self.held).keys().cloned().collect();
        let live_workers: Vec<&str> = self.view.live.keys().map(String::as_str).collect();
        let plan = assignment::plan(&TakeInput {
            worker_id: self.me(),
            live_workers: &live_workers,
            leases: &leases,
            expired: &expired,
            orphaned: &orphaned,
            max_leases: config.max_leases_per_worker,
            max_steal: config.max_leases_to_steal,
        });
        self.free_seen = leases
            .iter()
            .filter(|l| !l.checkpoint.is_shard_end() && (l.owner.is_none() || expired.contains(&l.key)))
            .count() as u64;
        for key in &plan.take {
            let Some(lease) = leases.iter().find(|l| &l.key == key) else {
                continue;
            };
            // A shard whose task panicked here is left to other workers for a while: a
            // bug that one record triggers must not loop on one worker at every take.
            // One task per shard: a lease lost here is taken again only once its old
            // task ended (its in-flight checkpoint could otherwise land on the new take).
            if held.contains(key)
                || self.tasks.contains_key(key)
                || self
                    .panicked
                    .get(key)
                    .is_some_and(|at| at.elapsed() < config.failover * 3)
            {
                continue;
            }
            if self.take(lease).await? {
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
    async fn take(&mut self, lease: &Lease) -> Result<bool, LeaseTableError> {
        self.take_as(lease, None).await
    }

    /// Takes `lease` (as last read), or confirms it when `handed_by` handed it over;
    /// starts reading it; returns whether it is this worker's.
    async fn take_as(&mut self, lease: &Lease, handed_by: Option<&str>) -> Result<bool, LeaseTableError> {
        /// A take that failed before it reached the table is tried again at once (the
        /// lease waits otherwise for the next scan), a few times.
        const ATTEMPTS: u32 = 3;
        let consumer = self.consumer;
        let me = consumer.config.worker_id.clone();
        let era = self.liveness.era();
        let mut backoff = crate::backoff::Backoff::new(Duration::from_millis(50), Duration::from_millis(500));
        let mut taken = None;
        for attempt in 1..=ATTEMPTS {
            let error = match consumer.store.take(lease, &me).await {
                Ok(counter) => {
                    taken = Some((counter, lease.checkpoint.clone()));
                    break;
                }
                Err(error) if error.is_condition_failed() || error.is_retryable() => error,
                Err(error) => return Err(error),
            };
            // The take may have landed before its answer was lost: the table decides.
            match consumer.store.get(&lease.key).await {
                Ok(now) => match (decide_after_condition(now.as_ref(), &me), &now) {
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
        match handed_by {
            Some(holder) => {
                self.count(names::LEASES_STOLEN);
                tracing::info!(application = %self.application(), shard_id = %lease.key, from = %holder, "lease handed over to this worker");
            }
            None => {
                self.count(names::LEASES_TAKEN);
                tracing::info!(application = %self.application(), shard_id = %lease.key, from = ?lease.owner, "lease taken");
            }
        }
        let mut taken = lease.clone();
        taken.checkpoint = checkpoint;
        self.start_shard(&taken, counter, era);
        Ok(true)
    }

    /// The leader deletes entries of workers dead for long; their leases went long ago.
    async fn forget_the_long_dead(&self) {
        let failover = self.consumer.config.failover;
        for (id, (entry, beyond)) in &self.view.dead {
            if *beyond >= failover * FORGET_DEAD_AFTER {
                match self.consumer.store.remove_worker(id, Some(entry.heartbeat)).await {
                    Ok(()) => {
                        tracing::info!(application = %self.application(), worker_id = %id, "entry of a dead worker deleted")
                    }
                    Err(error) => tracing::debug!(worker_id = %id, %error, "deleting a dead worker's entry failed"),
                }
            }
        }
    }

    /// Starts reading a lease this worker got at `counter` by a request sent in
    /// liveness era `era`.
    fn start_shard(&mut self, lease: &Lease, counter: u64, era: u64) {
        let consumer = self.consumer;
        self.generation += 1;
        let generation = self.generation;
        let holding = Holding::new(
            &lease.key,
            counter,
            lease.checkpoint.clone(),
            self.liveness.clone(),
            era,
        );
        let task = ShardTask {
            source: consumer.source.clone(),
            factory: consumer.factory.clone(),
            store: consumer.store.clone(),
            config: consumer.config.clone(),
            metrics: consumer.metrics.clone(),
            shard_id: lease.key.clone(),
            parent_shard_ids: lease.parent_shard_ids.clone(),
            holding: holding.clone(),
            shutdown: self.shard_tasks_stop.clone(),
        };
        let events = self.events.0.clone();
        let shard_id = lease.key.clone();
        let metrics = consumer.metrics.clone();
        let application = consumer.config.application.clone();
        let handle = tokio::spawn(
            async move {
                let ran = std::panic::AssertUnwindSafe(task.run()).catch_unwind().await;
                let (outcome, error) = ran.unwrap_or_else(|panic| {
                    let message = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    metrics.count(names::SHARD_TASK_PANICS, 1, &[(APPLICATION, &application)]);
                    tracing::error!(%application, %shard_id, panic = %message, "shard task panicked; its lease is given up");
                    (ShardOutcome::Panicked, None)
                });
                let _ = events.send((shard_id, generation, outcome, error));
            }
            .in_current_span(),
        );
        if let Some(previous) = lock(&self.held).insert(lease.key.clone(), holding) {
            previous.abandon();
        }
        self.tasks.insert(lease.key.clone(), (generation, AbortOnDrop(handle)));
    }

    async fn shard_finished(&mut self, shard_id: &str, generation: u64, outcome: ShardOutcome) {
        if self.tasks.get(shard_id).is_none_or(|(g, _)| *g != generation) {
            return;
        }
        self.tasks.remove(shard_id);
        // A finished lease stays in the table (its children check it) but needs no renewal.
        let Some(holding) = lock(&self.held).remove(shard_id) else {
            return;
        };
        match outcome {
            ShardOutcome::Panicked | ShardOutcome::Expired => {
                if outcome == ShardOutcome::Panicked {
                    self.panicked.insert(shard_id.to_string(), Instant::now());
                }
                // Not read by anyone here: give it up for any worker to take, and say so.
                if self.release(&holding).await {
                    self.announce(1);
                }
                self.scan_wanted = true;
            }
            ShardOutcome::HandedOff => self.hand_over(&holding).await,
            ShardOutcome::Ended => self.take_children_of(shard_id).await,
            ShardOutcome::Lost | ShardOutcome::Stopped | ShardOutcome::Failed => {}
        }
        self.publish();
    }

    /// A shard was read to its end: its children's leases are made now, and this
    /// worker takes them (it just freed a reader); others hear of what it leaves.
    async fn take_children_of(&mut self, shard_id: &str) {
        let mut created = Vec::new();
        if let Err(error) = self.sync_shards(&mut created).await {
            // The leader's next sync makes what is missing.
            tracing::warn!(%error, "shard sync after SHARD_END failed");
        }
        let mut untaken = 0;
        for lease in &created {
            let child = lease.parent_shard_ids.iter().any(|p| p == shard_id);
            let taken = child && matches!(self.take(lease).await, Ok(true));
            untaken += usize::from(!taken);
        }
        self.announce(untaken);
    }

    /// Writes the new owner of a lease handed over on request; if that fails, releases it.
    async fn hand_over(&mut self, holding: &Holding) {
        let Some(to) = holding.hand_to() else {
            return;
        };
        let store = &self.consumer.store;
        let me = self.me().to_string();
        let error = match store.hand_off(&holding.key, &me, holding.counter(), &to).await {
            Ok(_) => {
                self.count(names::LEASES_HANDED_OFF);
                tracing::info!(application = %self.application(), shard_id = %holding.key, %to, "lease handed over");
                return;
            }
            Err(error) => error,
        };
        // The write may have landed before its answer was lost: the table decides.
        match store.get(&holding.key).await {
            Ok(Some(lease)) if lease.owner.as_deref() == Some(to.as_str()) => {
                self.count(names::LEASES_HANDED_OFF);
            }
            Ok(Some(lease)) if lease.owner.as_deref() == Some(me.as_str()) => {
                tracing::warn!(shard_id = %holding.key, %error, "hand-over failed; releasing the lease instead");
                holding.advanced(lease.counter);
                if self.release(holding).await {
                    self.announce(1);
                }
            }
            _ => tracing::warn!(shard_id = %holding.key, %error, "hand-over failed; the lease moved on"),
        }
    }

    /// Tells every shard task to stop without making anything more durable: their work
    /// stops as on a lost lease (nothing is checkpointed), but the leases are still
    /// this worker's to release.
    fn abandon(&mut self) {
        self.abandoned = true;
        for holding in lock(&self.held).values() {
            holding.abandon();
        }
    }

    /// Stops every shard task: each flushes and checkpoints what it can (the heartbeat
    /// keeps the leases alive meanwhile). Abandoned work is given a failover time to
    /// notice, then cut off: a processor retrying a write must not keep a failed
    /// process alive.
    async fn stop_shards(&mut self) {
        self.shard_tasks_stop.cancel();
        let tasks: Vec<AbortOnDrop> = std::mem::take(&mut self.tasks).into_values().map(|(_, t)| t).collect();
        let aborts: Vec<_> = tasks.iter().map(|t| t.0.abort_handle()).collect();
        let waiting = futures::future::join_all(tasks.into_iter().map(AbortOnDrop::join));
        let cutoff = self.abandoned.then_some(self.consumer.config.failover);
        let deadline = async move {
            match cutoff {
                Some(after) => tokio::time::sleep(after).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = waiting => {}
            () = deadline => {
                aborts.iter().for_each(tokio::task::AbortHandle::abort);
                tracing::warn!("shard tasks did not stop within the failover time; aborted");
            }
        }
    }

    /// Gives a lease up so another worker takes it at its next scan, not a failover
    /// later; returns whether it was released.
    async fn release(&mut self, holding: &Holding) -> bool {
        if holding.is_lost() || holding.checkpoint().is_shard_end() {
            return false;
        }
        let consumer = self.consumer;
        let released = match consumer
            .store
            .release(&holding.key, &consumer.config.worker_id, holding.counter())
            .await
        {
            // The release may have landed before its answer was lost: the table decides.
            Err(error) if error.is_condition_failed() || error.is_retryable() => {
                match consumer.store.get(&holding.key).await {
                    Ok(Some(lease)) if lease.owner.is_none() && lease.counter == holding.counter() + 1 => Ok(()),
                    _ => Err(error),
                }
            }
            other => other,
        };
        match released {
            Ok(()) => {
                tracing::info!(application = %self.application(), shard_id = %holding.key, "lease released");
                // Free since now: if nobody takes it within a pass, it is an orphan that
                // this worker takes too, whatever its share (its first scan would
                // otherwise start that clock only when it sees the new counter).
                self.tracker.saw(&holding.key, holding.counter() + 1, Instant::now());
                true
            }
            Err(error) => {
                tracing::warn!(shard_id = %holding.key, %error, "lease release failed; this worker takes it back at its next scan");
                false
            }
        }
    }

    /// Releases every lease still held (after the shard tasks stopped), and those handed
    /// over to this worker that it did not start reading yet.
    async fn release_all(&mut self) {
        let holdings: Vec<Arc<Holding>> = std::mem::take(&mut *lock(&self.held)).into_values().collect();
        for holding in &holdings {
            self.release(holding).await;
        }
        let store = &self.consumer.store;
        for key in std::mem::take(&mut self.wants).into_keys() {
            if let Ok(Some(lease)) = store.get(&key).await
                && lease.owner.as_deref() == Some(self.me())
            {
                match store.release(&key, self.me(), lease.counter).await {
                    Ok(()) => {
                        tracing::info!(application = %self.application(), shard_id = %key, "lease handed over here released")
                    }
                    Err(error) => {
                        tracing::warn!(shard_id = %key, %error, "lease handed over here not released; free once this worker's entry is gone")
                    }
                }
            }
        }
    }

    /// Deletes this worker's entry: others see it gone at their next pass and take the
    /// released leases then.
    async fn leave(&self) {
        let consumer = self.consumer;
        if let Err(error) = consumer.store.remove_worker(self.me(), None).await {
            tracing::warn!(%error, "deleting this worker's entry failed; others judge it dead after the failover time");
        }
        tracing::info!(application = %self.application(), "consumer stopped");
    }
}
