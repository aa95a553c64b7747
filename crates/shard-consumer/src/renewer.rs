//! The lease renewer: every renewal interval, every held lease is renewed, all at once,
//! on a task of its own. A slow checkpoint, a long shard listing or a take pass never
//! delays a renewal (the Java KCL's `LeaseRenewer`).
//!
//! A renewal that fails its condition is not taken as lost at once: the lease is read
//! again, and if this worker still owns it (the counter moved under another write of
//! ours, or our own renewal landed before its answer was lost) it carries on. A lease
//! whose renewals keep failing is given up before others could judge it expired.

use std::sync::Arc;
use std::time::Duration;

use pipeline_runtime::{Metrics, Unit};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::holding::{Holding, Holdings, lock};
use crate::lease_store::{AfterCondition, LeaseStore, decide_after_condition};

pub(crate) struct Renewer {
    pub store: Arc<dyn LeaseStore>,
    pub owner: String,
    pub application: String,
    pub held: Holdings,
    pub interval: Duration,
    pub failover: Duration,
    pub metrics: Metrics,
}

impl Renewer {
    /// Renews until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => return,
                _ = ticks.tick() => self.renew_all().await,
            }
        }
    }

    /// One round: every held lease, in parallel.
    pub async fn renew_all(&self) {
        let holdings: Vec<Arc<Holding>> = lock(&self.held).values().cloned().collect();
        futures::future::join_all(holdings.iter().map(|h| self.renew(h))).await;
        self.metrics.gauge(
            "LeasesHeld",
            holdings.iter().filter(|h| !h.is_lost()).count() as f64,
            Unit::Count,
            &[("Application", &self.application)],
        );
    }

    async fn renew(&self, holding: &Holding) {
        if holding.is_lost() {
            return;
        }
        let sent = Instant::now();
        match self.store.renew(&holding.key, &self.owner, holding.counter()).await {
            Ok(counter) => holding.renewed(counter, sent),
            Err(error) if error.is_condition_failed() || error.is_retryable() => {
                // Either way the write may have landed: the table decides.
                match self.store.get(&holding.key).await {
                    Ok(lease) => match decide_after_condition(lease.as_ref(), &self.owner) {
                        AfterCondition::Held { counter, .. } => holding.advanced(counter),
                        AfterCondition::Lost => {
                            tracing::warn!(application = %self.application, shard_id = %holding.key, "lease taken by another worker");
                            holding.lose();
                            return;
                        }
                    },
                    Err(reread) => tracing::warn!(shard_id = %holding.key, %error, %reread, "lease renewal failed"),
                }
            }
            Err(error) => tracing::warn!(shard_id = %holding.key, %error, "lease renewal failed"),
        }
        // The next renewal could land after others judge the lease expired: give it up now.
        if !holding.is_current(Instant::now() + self.interval, self.failover) {
            tracing::warn!(application = %self.application, shard_id = %holding.key,
                alive_at = ?holding.alive_at(), "lease not renewed in time; giving it up");
            holding.lose();
        }
    }
}
