//! The worker, in the Java KCL's shape: a shard syncer keeps the lease table in step
//! with the stream's shards ([`crate::shard_sync`] decides), a taker takes leases
//! toward balance ([`crate::assignment`] decides), a renewer keeps the held ones alive
//! on a task of its own ([`crate::renewer`]), and each held shard is read by a task of
//! its own ([`crate::shard`]). On stop every shard flushes and every lease is released.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use futures::FutureExt;
use pipeline_runtime::Metrics;
use pipeline_runtime::retry::{RetryError, RetryPolicy, retry};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::assignment::{self, ExpiryTracker, TakeInput};
use crate::config::{ConfigError, ConsumerConfig};
use crate::error::{AwsError, Classified, ErrorKind};
use crate::holding::{Holding, Holdings, lock};
use crate::lease::Lease;
use crate::lease_store::{AfterCondition, LeaseStore, decide_after_condition};
use crate::lease_table::LeaseTableError;
use crate::processor::ProcessorFactory;
use crate::renewer::Renewer;
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
    /// and every held lease is released so other workers take it at once. Returns an
    /// error when the consumer cannot go on (a failure no retry fixes), after stopping
    /// every shard and releasing the leases the same way.
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
        match retry(&RetryPolicy::START, &shutdown, || worker.sync_shards()).await {
            Ok(()) => {}
            Err(RetryError::Stopped { .. }) => return Ok(()),
            Err(RetryError::Failed { error, .. }) => return Err(error),
        }
        tracing::info!(
            application = %self.config.application,
            worker_id = %self.config.worker_id,
            source = %self.source.describe(),
            lease_table = %self.store.name(),
            "consumer started"
        );
        let renewer_stop = CancellationToken::new();
        let renewer = AbortOnDrop(tokio::spawn(
            Renewer {
                store: self.store.clone(),
                owner: self.config.worker_id.clone(),
                application: self.config.application.clone(),
                held: worker.held.clone(),
                interval: self.config.renewal_interval,
                failover: self.config.failover,
                metrics: self.metrics.clone(),
            }
            .run(renewer_stop.clone()),
        ));

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
                    if let Err(error) = worker.take_leases().await {
                        let error = (self.table_error())(error);
                        if error.kind().of_own_request() == ErrorKind::Fatal {
                            break Some(error);
                        }
                        tracing::warn!(%error, "lease taking failed");
                    }
                }
                _ = sync.tick() => {
                    if let Err(error) = worker.sync_shards().await {
                        if error.kind().of_own_request() == ErrorKind::Fatal {
                            break Some(error);
                        }
                        tracing::warn!(%error, "shard sync failed");
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
        renewer_stop.cancel();
        let _ = renewer.join().await;
        worker.release_all().await;
        match failure {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

/// A task that dies with its owner: a worker dropped without stopping (a killed process,
/// an aborted task) must leave no renewer or reader behind, or its leases would live on
/// with nobody reading.
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

struct Worker<'a, S, F> {
    consumer: &'a Consumer<S, F>,
    held: Holdings,
    tasks: BTreeMap<String, (u64, AbortOnDrop)>,
    tracker: ExpiryTracker,
    shard_tasks_stop: CancellationToken,
    events: (mpsc::UnboundedSender<ShardEvent>, mpsc::UnboundedReceiver<ShardEvent>),
    generation: u64,
    /// The consumer stops on a failure: shard tasks give their work up.
    abandoned: bool,
    /// When a shard's task last panicked on this worker.
    panicked: BTreeMap<String, Instant>,
}

impl<'a, S: Source, F: ProcessorFactory<S::Record>> Worker<'a, S, F> {
    fn new(consumer: &'a Consumer<S, F>) -> Self {
        Self {
            consumer,
            held: Holdings::default(),
            tasks: BTreeMap::new(),
            tracker: ExpiryTracker::default(),
            shard_tasks_stop: CancellationToken::new(),
            events: mpsc::unbounded_channel(),
            generation: 0,
            abandoned: false,
            panicked: BTreeMap::new(),
        }
    }

    fn application(&self) -> &str {
        &self.consumer.config.application
    }

    /// Creates leases for shards that have none, and deletes finished leases that
    /// nothing needs any more ([`plan_shard_leases`] decides).
    async fn sync_shards(&self) -> Result<(), ConsumerError> {
        let consumer = self.consumer;
        let shards = consumer
            .source
            .list_shards()
            .await
            .map_err(|source| ConsumerError::ListShards {
                stream: consumer.source.describe(),
                source,
            })?;
        let leases = consumer.store.list().await.map_err(consumer.table_error())?;
        let plan = plan_shard_leases(&shards, &leases, consumer.config.initial_position);
        for lease in &plan.create {
            if consumer.store.create(lease).await.map_err(consumer.table_error())? {
                tracing::info!(application = %self.application(), shard_id = %lease.key, checkpoint = %lease.checkpoint, parents = ?lease.parent_shard_ids, "lease created");
            }
        }
        for key in &plan.delete {
            consumer
                .store
                .delete_finished(key)
                .await
                .map_err(consumer.table_error())?;
            tracing::info!(application = %self.application(), shard_id = %key, "finished lease deleted");
        }
        Ok(())
    }

    async fn take_leases(&mut self) -> Result<(), LeaseTableError> {
        let consumer = self.consumer;
        let config = &consumer.config;
        let leases = consumer.store.list().await?;
        let expired = self.tracker.observe(&leases, Instant::now(), config.failover);
        // Leases we still hold count as ours whatever the snapshot says about their age.
        let held: HashSet<String> = lock(&self.held)
            .values()
            .filter(|h| !h.is_lost())
            .map(|h| h.key.clone())
            .collect();
        let expired: HashSet<String> = expired.into_iter().filter(|key| !held.contains(key)).collect();
        let plan = assignment::plan(&TakeInput {
            worker_id: &config.worker_id,
            leases: &leases,
            expired: &expired,
            max_leases: config.max_leases_per_worker,
            max_steal: config.max_leases_to_steal,
        });
        for (key, stolen) in plan
            .take
            .iter()
            .map(|k| (k, false))
            .chain(plan.steal.iter().map(|k| (k, true)))
        {
            let Some(lease) = leases.iter().find(|l| &l.key == key) else {
                continue;
            };
            // A shard whose task panicked here is left to other workers for a while: a
            // bug that one record triggers must not loop on one worker at every take.
            if held.contains(key)
                || self
                    .panicked
                    .get(key)
                    .is_some_and(|at| at.elapsed() < config.failover * 3)
            {
                continue;
            }
            let sent = Instant::now();
            let taken = match consumer.store.take(lease, &config.worker_id).await {
                Ok(counter) => Some((counter, lease.checkpoint.clone())),
                // The take may have landed before its answer was lost: the table decides.
                Err(error) if error.is_condition_failed() || error.is_retryable() => {
                    match consumer.store.get(key).await {
                        Ok(now) => match decide_after_condition(now.as_ref(), &config.worker_id) {
                            AfterCondition::Held { counter, checkpoint } => Some((counter, checkpoint)),
                            AfterCondition::Lost => None,
                        },
                        Err(reread) => {
                            tracing::debug!(shard_id = %key, %error, %reread, "lease take unsettled; next pass");
                            None
                        }
                    }
                }
                Err(error) => return Err(error),
            };
            match taken {
                Some((counter, checkpoint)) => {
                    let metric = if stolen { "LeasesStolen" } else { "LeasesTaken" };
                    consumer
                        .metrics
                        .count(metric, 1, &[("Application", self.application())]);
                    tracing::info!(application = %self.application(), shard_id = %key, from = ?lease.owner, stolen, "lease taken");
                    let mut taken = lease.clone();
                    taken.checkpoint = checkpoint;
                    self.start_shard(&taken, counter, sent);
                }
                None => tracing::debug!(shard_id = %key, "another worker took the lease first"),
            }
        }
        Ok(())
    }

    fn start_shard(&mut self, lease: &Lease, counter: u64, sent: Instant) {
        let consumer = self.consumer;
        self.generation += 1;
        let generation = self.generation;
        let holding = Holding::new(&lease.key, counter, lease.checkpoint.clone(), sent);
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
        let handle = tokio::spawn(async move {
            let ran = std::panic::AssertUnwindSafe(task.run()).catch_unwind().await;
            let (outcome, error) = ran.unwrap_or_else(|panic| {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                metrics.count("ShardTaskPanics", 1, &[("Application", &application)]);
                tracing::error!(%application, %shard_id, panic = %message, "shard task panicked; its lease is given up");
                (ShardOutcome::Panicked, None)
            });
            let _ = events.send((shard_id, generation, outcome, error));
        });
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
                // Not renewed with no reader behind it: give it up for any worker to take.
                self.release(&holding).await;
            }
            ShardOutcome::Ended => {
                if let Err(error) = self.sync_shards().await {
                    tracing::warn!(%error, "shard sync after SHARD_END failed");
                }
            }
            ShardOutcome::Lost | ShardOutcome::Stopped | ShardOutcome::Failed => {}
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

    /// Stops every shard task: each flushes and checkpoints what it can (the renewer
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

    /// Gives a lease up so another worker takes it at its next pass, not a failover later.
    async fn release(&self, holding: &Holding) {
        if holding.is_lost() || holding.checkpoint().is_shard_end() {
            return;
        }
        let consumer = self.consumer;
        match consumer
            .store
            .release(&holding.key, &consumer.config.worker_id, holding.counter())
            .await
        {
            Ok(()) => tracing::info!(application = %self.application(), shard_id = %holding.key, "lease released"),
            Err(error) => {
                tracing::warn!(shard_id = %holding.key, %error, "lease release failed; it expires after the failover time")
            }
        }
    }

    /// Releases every lease still held (after the shard tasks stopped).
    async fn release_all(&mut self) {
        let holdings: Vec<Arc<Holding>> = std::mem::take(&mut *lock(&self.held)).into_values().collect();
        for holding in &holdings {
            self.release(holding).await;
        }
        tracing::info!(application = %self.application(), "consumer stopped");
    }
}
