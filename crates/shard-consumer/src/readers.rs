//! The shards a worker reads: one task per held lease ([`crate::shard`]), the leases
//! they hold ([`Holdings`]), and how each task ended. The taker starts a reader when it
//! gets a lease; the worker hears back when a reader ends, and stops them all at the end.
//! A task that panics ends like any other, with [`ShardOutcome::Panicked`], and its
//! shard is left to other workers for a while.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use pipeline_runtime::metrics::names::{self, dimension::APPLICATION};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::holding::{Holding, Holdings, Liveness, lock};
use crate::lease::Lease;
use crate::processor::ProcessorFactory;
use crate::shard::{ShardError, ShardOutcome, ShardTask};
use crate::source::Source;
use crate::worker::Context;

/// A shard task's end: its shard, the generation of its start, how it ended and, when
/// it stopped the consumer, why.
pub(crate) type ShardEvent = (String, u64, ShardOutcome, Option<ShardError>);

/// A task that dies with its owner: a worker dropped without stopping (a killed process,
/// an aborted task) must leave no heartbeat or reader behind, or its leases would live
/// on with nobody reading.
pub(crate) struct AbortOnDrop(pub JoinHandle<()>);

impl AbortOnDrop {
    pub async fn join(mut self) -> Result<(), tokio::task::JoinError> {
        (&mut self.0).await
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One worker's shard tasks.
pub(crate) struct ShardReaders<S, F> {
    context: Context<S, F>,
    liveness: Arc<Liveness>,
    held: Holdings,
    tasks: BTreeMap<String, (u64, AbortOnDrop)>,
    /// Cancelled when the worker stops its shards.
    stopping: CancellationToken,
    events: (mpsc::UnboundedSender<ShardEvent>, mpsc::UnboundedReceiver<ShardEvent>),
    generation: u64,
    /// The consumer stops on a failure: shard tasks give their work up.
    abandoned: bool,
    /// When a shard's task last panicked on this worker.
    panicked: BTreeMap<String, Instant>,
}

impl<S: Source, F: ProcessorFactory<S::Record>> ShardReaders<S, F> {
    pub fn new(context: Context<S, F>, liveness: Arc<Liveness>, stopping: CancellationToken) -> Self {
        Self {
            context,
            liveness,
            held: Holdings::default(),
            tasks: BTreeMap::new(),
            stopping,
            events: mpsc::unbounded_channel(),
            generation: 0,
            abandoned: false,
            panicked: BTreeMap::new(),
        }
    }

    /// The next shard task that ended (none while tasks run).
    pub async fn next_ended(&mut self) -> Option<ShardEvent> {
        self.events.1.recv().await
    }

    /// The shards this worker reads (not waiting for a parent, not being handed over).
    pub fn load(&self) -> u64 {
        lock(&self.held).values().filter(|h| h.is_working()).count() as u64
    }

    /// Whether a task of this worker's reads `key` (or still winds down on it).
    pub fn is_reading(&self, key: &str) -> bool {
        self.tasks.contains_key(key)
    }

    /// Every lease held here.
    pub fn held(&self) -> HashSet<String> {
        lock(&self.held).keys().cloned().collect()
    }

    /// Leases read here that could be handed over: working, with a task.
    pub fn handable(&self) -> BTreeSet<String> {
        lock(&self.held)
            .values()
            .filter(|h| h.is_working() && self.tasks.contains_key(&h.key))
            .map(|h| h.key.clone())
            .collect()
    }

    /// Asks the reader of `key` to flush and hand its lease to `to`; returns whether
    /// the lease is held here.
    pub fn hand_off(&self, key: &str, to: &str) -> bool {
        match lock(&self.held).get(key) {
            Some(holding) => {
                holding.hand_off(to);
                true
            }
            None => false,
        }
    }

    /// Whether the task of `key` panicked here less than `within` ago.
    pub fn panicked_within(&self, key: &str, within: Duration) -> bool {
        self.panicked.get(key).is_some_and(|at| at.elapsed() < within)
    }

    /// Starts reading a lease this worker got at `counter` by a request sent in
    /// liveness era `era`.
    pub fn start(&mut self, lease: &Lease, counter: u64, era: u64) {
        self.generation += 1;
        let generation = self.generation;
        let holding = Holding::new(
            &lease.key,
            counter,
            lease.checkpoint.clone(),
            self.liveness.clone(),
            era,
        );
        let context = &self.context;
        let task = ShardTask {
            context: context.clone(),
            shard_id: lease.key.clone(),
            parent_shard_ids: lease.parent_shard_ids.clone(),
            holding: holding.clone(),
            shutdown: self.stopping.clone(),
        };
        let events = self.events.0.clone();
        let shard_id = lease.key.clone();
        let metrics = context.metrics.clone();
        let application = context.config.application.clone();
        // Spawned tasks log inside the caller's span (a service's, a simulated worker's).
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

    /// The task of `shard_id` started as `generation` ended with `outcome`: returns its
    /// holding, or nothing when a newer task reads the shard or the lease was let go.
    pub fn ended(&mut self, shard_id: &str, generation: u64, outcome: ShardOutcome) -> Option<Arc<Holding>> {
        if self.tasks.get(shard_id).is_none_or(|(g, _)| *g != generation) {
            return None;
        }
        self.tasks.remove(shard_id);
        // A finished lease stays in the table (its children check it) but needs no renewal.
        let holding = lock(&self.held).remove(shard_id)?;
        if outcome == ShardOutcome::Panicked {
            self.panicked.insert(shard_id.to_string(), Instant::now());
        }
        Some(holding)
    }

    /// Tells every shard task to stop without making anything more durable: their work
    /// stops as on a lost lease (nothing is checkpointed), but the leases are still
    /// this worker's to release.
    pub fn abandon(&mut self) {
        self.abandoned = true;
        for holding in lock(&self.held).values() {
            holding.abandon();
        }
    }

    /// Stops every shard task: each flushes and checkpoints what it can (the heartbeat
    /// keeps the leases alive meanwhile). Abandoned work is given a failover time to
    /// notice, then cut off: a processor retrying a write must not keep a failed
    /// process alive.
    pub async fn stop(&mut self) {
        self.stopping.cancel();
        let tasks: Vec<AbortOnDrop> = std::mem::take(&mut self.tasks).into_values().map(|(_, t)| t).collect();
        let aborts: Vec<_> = tasks.iter().map(|t| t.0.abort_handle()).collect();
        let waiting = futures::future::join_all(tasks.into_iter().map(AbortOnDrop::join));
        let cutoff = self.abandoned.then_some(self.context.config.failover);
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

    /// Every lease still held, let go of here (to be released).
    pub fn let_go(&mut self) -> Vec<Arc<Holding>> {
        std::mem::take(&mut *lock(&self.held)).into_values().collect()
    }
}
