//! One worker's parts and what ties them, the Java KCL's `LeaseCoordinator` in this
//! worker's terms: the renewer ([`Heartbeat`]), the taker ([`Taker`]), the shard syncer
//! ([`ShardSyncer`]) and the shard readers ([`ShardReaders`]). [`crate::consumer`]
//! drives them from one loop; here is what happens between them: a shard task that
//! ended (release its lease, hand it over, or make and take the children's leases), a
//! stop (release everything, delete the worker's entry).

use std::sync::Arc;

use pipeline_runtime::Metrics;
use pipeline_runtime::metrics::names::{self, dimension::APPLICATION};
use tokio_util::sync::CancellationToken;

use crate::config::ConsumerConfig;
use crate::consumer::ConsumerError;
use crate::heartbeat::Heartbeat;
use crate::holding::{Holding, Liveness};
use crate::lease::Lease;
use crate::lease_store::LeaseStore;
use crate::processor::ProcessorFactory;
use crate::readers::ShardReaders;
use crate::shard::ShardOutcome;
use crate::shard_syncer::ShardSyncer;
use crate::source::Source;
use crate::taker::Taker;

/// What every part of a worker works with.
pub(crate) struct Context<S, F> {
    pub source: S,
    pub factory: Arc<F>,
    pub store: Arc<dyn LeaseStore>,
    pub config: Arc<ConsumerConfig>,
    pub metrics: Metrics,
}

impl<S: Clone, F> Clone for Context<S, F> {
    fn clone(&self) -> Self {
        Self {
            source: self.source.clone(),
            factory: self.factory.clone(),
            store: self.store.clone(),
            config: self.config.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

pub(crate) struct Worker<S, F> {
    store: Arc<dyn LeaseStore>,
    config: Arc<ConsumerConfig>,
    metrics: Metrics,
    liveness: Arc<Liveness>,
    pub readers: ShardReaders<S, F>,
    pub taker: Taker,
    syncer: ShardSyncer<S>,
}

impl<S: Source, F: ProcessorFactory<S::Record>> Worker<S, F> {
    pub fn new(context: Context<S, F>) -> Self {
        let Context {
            source,
            store,
            config,
            metrics,
            ..
        } = context.clone();
        let liveness = Arc::new(Liveness::new(config.failover));
        // Retries of the taker and the syncer end when the shards stop.
        let stopping = CancellationToken::new();
        Self {
            readers: ShardReaders::new(context, liveness.clone(), stopping.clone()),
            taker: Taker::new(
                store.clone(),
                config.clone(),
                metrics.clone(),
                liveness.clone(),
                stopping.clone(),
            ),
            syncer: ShardSyncer::new(source, store.clone(), config.clone(), stopping),
            store,
            config,
            metrics,
            liveness,
        }
    }

    /// The renewer of this worker's entry (and so of every lease it holds).
    pub fn heartbeat(&self) -> Heartbeat {
        Heartbeat {
            store: self.store.clone(),
            application: self.config.application.clone(),
            entry: self.taker.entry(),
            liveness: self.liveness.clone(),
            interval: self.config.renewal_interval,
            metrics: self.metrics.clone(),
        }
    }

    fn application(&self) -> &str {
        &self.config.application
    }

    fn me(&self) -> &str {
        &self.config.worker_id
    }

    /// Syncs the lease table with the stream's shards; adds the leases made to `created`.
    pub async fn sync_shards(&self, created: &mut Vec<Lease>) -> Result<(), ConsumerError> {
        self.syncer.sync(created).await
    }

    /// One taker pass.
    pub async fn pass(&mut self) -> Result<(), crate::lease_table::LeaseTableError> {
        self.taker.pass(&mut self.readers).await
    }

    /// A shard task ended: what its end means for its lease.
    pub async fn shard_ended(&mut self, shard_id: &str, generation: u64, outcome: ShardOutcome) {
        let Some(holding) = self.readers.ended(shard_id, generation, outcome) else {
            return;
        };
        match outcome {
            ShardOutcome::Panicked | ShardOutcome::Expired => {
                // Not read by anyone here: give it up for any worker to take, and say so.
                if self.release(&holding).await {
                    self.taker.announce(1);
                }
                self.taker.want_scan();
            }
            ShardOutcome::HandedOff => self.hand_over(&holding).await,
            ShardOutcome::Ended => self.take_children_of(shard_id).await,
            ShardOutcome::Lost | ShardOutcome::Stopped | ShardOutcome::Failed => {}
        }
        self.taker.publish(self.readers.load());
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
            let taken = child && matches!(self.taker.take(&mut self.readers, lease).await, Ok(true));
            untaken += usize::from(!taken);
        }
        self.taker.announce(untaken);
    }

    /// Writes the new owner of a lease handed over on request; if that fails, releases it.
    async fn hand_over(&mut self, holding: &Holding) {
        let Some(to) = holding.hand_to() else {
            return;
        };
        let store = self.store.clone();
        let me = self.me().to_string();
        let error = match store.hand_off(&holding.key, &me, holding.counter(), &to).await {
            Ok(_) => {
                self.count_handed_off();
                tracing::info!(application = %self.application(), shard_id = %holding.key, %to, "lease handed over");
                return;
            }
            Err(error) => error,
        };
        // The write may have landed before its answer was lost: the table decides.
        match store.get(&holding.key).await {
            Ok(Some(lease)) if lease.owner.as_deref() == Some(to.as_str()) => self.count_handed_off(),
            Ok(Some(lease)) if lease.owner.as_deref() == Some(me.as_str()) => {
                tracing::warn!(shard_id = %holding.key, %error, "hand-over failed; releasing the lease instead");
                holding.advanced(lease.counter);
                if self.release(holding).await {
                    self.taker.announce(1);
                }
            }
            _ => tracing::warn!(shard_id = %holding.key, %error, "hand-over failed; the lease moved on"),
        }
    }

    fn count_handed_off(&self) {
        self.metrics
            .count(names::LEASES_HANDED_OFF, 1, &[(APPLICATION, self.application())]);
    }

    /// Gives a lease up so another worker takes it at its next scan, not a failover
    /// later; returns whether it was released.
    async fn release(&mut self, holding: &Holding) -> bool {
        if holding.is_lost() || holding.checkpoint().is_shard_end() {
            return false;
        }
        let store = &self.store;
        let released = match store.release(&holding.key, self.me(), holding.counter()).await {
            // The release may have landed before its answer was lost: the table decides.
            Err(error) if error.is_condition_failed() || error.is_retryable() => match store.get(&holding.key).await {
                Ok(Some(lease)) if lease.owner.is_none() && lease.counter == holding.counter() + 1 => Ok(()),
                _ => Err(error),
            },
            other => other,
        };
        match released {
            Ok(()) => {
                tracing::info!(application = %self.application(), shard_id = %holding.key, "lease released");
                self.taker.released(&holding.key, holding.counter() + 1);
                true
            }
            Err(error) => {
                tracing::warn!(shard_id = %holding.key, %error, "lease release failed; this worker takes it back at its next scan");
                false
            }
        }
    }

    /// Stops every shard: each flushes and checkpoints what it can, unless `abandon`
    /// (the consumer stops on a failure: nothing more is made durable).
    pub async fn stop_shards(&mut self, abandon: bool) {
        if abandon {
            self.readers.abandon();
        }
        self.readers.stop().await;
    }

    /// Releases every lease still held (after the shard tasks stopped), and those handed
    /// over to this worker that it did not start reading yet.
    pub async fn release_all(&mut self) {
        for holding in &self.readers.let_go() {
            self.release(holding).await;
        }
        let store = self.store.clone();
        for key in self.taker.give_up_wants() {
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
    pub async fn leave(&self) {
        if let Err(error) = self.store.remove_worker(self.me(), None).await {
            tracing::warn!(%error, "deleting this worker's entry failed; others judge it dead after the failover time");
        }
        tracing::info!(application = %self.application(), "consumer stopped");
    }
}
