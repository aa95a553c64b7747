//! The renewer, the Java KCL's `LeaseRenewer` by one write per worker instead of one
//! per lease: every renewal interval, on a task of its own, this worker writes its
//! entry in the worker table (what [`crate::membership`] judges others by). One write
//! keeps every lease it holds alive; a slow checkpoint, a long shard listing or a take
//! pass never delays it. When its heartbeats stop landing, the worker's shard tasks
//! stop by themselves before others could judge it dead ([`crate::holding::Liveness`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pipeline_runtime::metrics::names::{self, dimension::APPLICATION};
use pipeline_runtime::{Metrics, Unit};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::holding::{Liveness, lock};
use crate::lease_store::LeaseStore;
use crate::membership::WorkerEntry;

pub(crate) struct Heartbeat {
    pub store: Arc<dyn LeaseStore>,
    pub application: String,
    /// This worker's entry as the worker loop keeps it (leases, wants, epoch).
    pub entry: Arc<Mutex<WorkerEntry>>,
    pub liveness: Arc<Liveness>,
    pub interval: Duration,
    pub metrics: Metrics,
}

impl Heartbeat {
    /// Beats until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => return,
                _ = ticks.tick() => {
                    if let Err(error) = self.beat().await {
                        let now = Instant::now();
                        if self.liveness.is_current(now)
                            && !self.liveness.is_current(now + self.interval)
                        {
                            tracing::warn!(application = %self.application, %error,
                                "heartbeats are not landing: this worker's shards stop before others take them");
                        } else {
                            tracing::warn!(application = %self.application, %error, "heartbeat failed");
                        }
                    }
                }
            }
        }
    }

    /// One heartbeat; the worker's leases are good for a failover time from its sending.
    pub async fn beat(&self) -> Result<(), crate::lease_table::LeaseTableError> {
        let entry = {
            let mut entry = lock(&self.entry);
            entry.heartbeat += 1;
            entry.clone()
        };
        let sent = Instant::now();
        self.store.heartbeat(&entry).await?;
        self.liveness.renewed(sent);
        self.metrics.gauge(
            names::LEASES_HELD,
            entry.leases as f64,
            Unit::Count,
            &[(APPLICATION, &self.application)],
        );
        Ok(())
    }
}
