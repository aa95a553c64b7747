//! A worker of a simulated fleet: the real [`Consumer`] on the run's models, with its
//! own gate (to stall it) and its own metrics.

use std::sync::Arc;

use pipeline_runtime::Metrics;
use shard_consumer::{Consumer, ConsumerConfig, ConsumerError};
use tokio::task::{AbortHandle, JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::faults::{Faults, Gate};
use crate::lease_table::SimLeaseStore;
use crate::processor::{Shared, SimProcessorFactory};
use crate::stream::SimSource;

/// A running worker.
pub struct Worker {
    pub id: String,
    pub gate: Gate,
    pub shutdown: CancellationToken,
    pub handle: Option<JoinHandle<Result<(), ConsumerError>>>,
    /// Kills the worker whatever holds its handle (a graceful stop awaits it).
    pub abort: AbortHandle,
    pub metrics: Metrics,
}

/// Starts a consumer named `config.worker_id` on the models of `shared`.
pub fn spawn_worker(shared: &Shared, faults: &Arc<Faults>, config: ConsumerConfig) -> Worker {
    let id = config.worker_id.clone();
    let gate = Gate::default();
    let source = SimSource {
        stream: shared.stream.clone(),
        world: shared.world.clone(),
        faults: faults.clone(),
        gate: gate.clone(),
    };
    let store = SimLeaseStore {
        table: shared.table.clone(),
        world: shared.world.clone(),
        faults: faults.clone(),
        gate: gate.clone(),
    };
    let factory = SimProcessorFactory {
        shared: shared.clone(),
        worker: id.clone(),
        gate: gate.clone(),
    };
    let metrics = Metrics::with_sink("Simulation", "sim", Box::new(std::io::sink()));
    let consumer = Consumer::new(source, store, factory, config, metrics.clone());
    let shutdown = CancellationToken::new();
    let span = tracing::info_span!("worker", id = %id);
    let handle = tokio::spawn(tracing::Instrument::instrument(consumer.run(shutdown.clone()), span));
    shared.observer.trace(&format!("start {id}"));
    Worker {
        id,
        gate,
        shutdown,
        abort: handle.abort_handle(),
        handle: Some(handle),
        metrics,
    }
}
