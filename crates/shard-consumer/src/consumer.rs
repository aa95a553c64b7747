//! The consumer: a worker in the Java KCL's shape, its parts each a module of its own.
//!
//! - The renewer ([`crate::heartbeat`]), on a task of its own, writes this worker's
//!   entry in the worker table every renewal interval: that one write keeps every lease
//!   it holds.
//! - The taker ([`crate::taker`]) reads who is alive, hands over leases others asked
//!   for, collects those it asked for, and scans the lease table when there may be
//!   something to take ([`crate::assignment`] decides).
//! - The shard syncer ([`crate::shard_syncer`]), on the leader (the live worker with
//!   the smallest id), keeps the lease table in step with the stream's shards
//!   ([`crate::shard_sync`] decides).
//! - The shard readers ([`crate::readers`]): a task per held shard ([`crate::shard`]).
//!
//! [`Consumer::run`] starts them (tables checked, first heartbeat, first sync), drives
//! the taker, the syncer and the readers' ends from one loop in a fixed order (so a
//! simulation replays exactly), and stops them: every shard flushes, every lease is
//! released and the worker's entry deleted, so others take the leases at their next
//! pass. What happens between the parts is [`crate::worker`]'s.
//!
//! Stealing is a hand-over: a worker below its share asks (in its entry) for a lease of
//! the busiest worker, which flushes that shard, checkpoints and writes the new owner
//! itself. A shard never has two readers, even for a moment, and nothing checkpointed
//! is read twice.

use std::sync::{Arc, Mutex};

use futures::FutureExt;
use pipeline_runtime::Metrics;
use pipeline_runtime::retry::{RetryError, RetryPolicy, retry};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::{ConfigError, ConsumerConfig};
use crate::error::{AwsError, Classified, ErrorKind};
use crate::holding::lock;
use crate::lease_store::LeaseStore;
use crate::lease_table::LeaseTableError;
use crate::processor::ProcessorFactory;
use crate::readers::AbortOnDrop;
use crate::shard::ShardError;
use crate::source::Source;
use crate::worker::{Context, Worker};

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

    fn context(&self) -> Context<S, F> {
        Context {
            source: self.source.clone(),
            factory: self.factory.clone(),
            store: self.store.clone(),
            config: self.config.clone(),
            metrics: self.metrics.clone(),
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
        let mut worker = Worker::new(self.context());
        let heartbeat = worker.heartbeat();
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
        worker
            .taker
            .announce(created.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner));
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
                Some((shard_id, generation, outcome, error)) = worker.readers.next_ended() => {
                    if let Some(error) = error {
                        break Some(error.into());
                    }
                    worker.shard_ended(&shard_id, generation, outcome).await;
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
                    if worker.taker.is_leader() {
                        let mut created = Vec::new();
                        let synced = worker.sync_shards(&mut created).await;
                        worker.taker.announce(created.len());
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
        }
        worker.stop_shards(failure.is_some()).await;
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
