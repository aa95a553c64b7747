//! The worker: takes and renews leases, keeps shard leases in step with the
//! stream's shards, runs one task per held shard, and releases everything on stop.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::FutureExt;
use pipeline_runtime::{Metrics, Unit};
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::assignment::{self, ExpiryTracker, TakeInput};
use crate::config::{ConfigError, ConsumerConfig, InitialPosition};
use crate::error::{AwsError, Classified, ErrorKind};
use crate::lease::Lease;
use crate::lease_table::{LeaseTable, LeaseTableError};
use crate::position::Checkpoint;
use crate::processor::{LeaseHold, ProcessorFactory, SharedHold};
use crate::shard::{ShardError, ShardOutcome, ShardTask};
use crate::source::{Shard, Source};
use pipeline_runtime::retry::{RetryError, RetryPolicy, retry};

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

struct HeldLease {
    /// Tells this holding apart from a later one of the same shard.
    generation: u64,
    hold: SharedHold,
    lost: CancellationToken,
    last_renewed: Instant,
    task: Option<JoinHandle<()>>,
}

/// A shard task's end: its shard, the holding's generation, how it ended and, when it
/// stopped the consumer, why.
type ShardEvent = (String, u64, ShardOutcome, Option<ShardError>);

impl Drop for HeldLease {
    /// A worker that is dropped without `stop` (a crash, an aborted task) must not
    /// leave readers behind: they would read without a renewed lease.
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// A lease-based consumer of one stream, for one application.
pub struct Consumer<S, F> {
    source: S,
    table: LeaseTable,
    factory: Arc<F>,
    config: Arc<ConsumerConfig>,
    metrics: Metrics,
}

impl<S: Source, F: ProcessorFactory<S::Record>> Consumer<S, F> {
    pub fn new(source: S, table: LeaseTable, factory: F, config: ConsumerConfig, metrics: Metrics) -> Self {
        Self {
            source,
            table,
            factory: Arc::new(factory),
            config: Arc::new(config),
            metrics,
        }
    }

    /// Runs until `shutdown`: then every shard task flushes through its processor,
    /// and every held lease is released so other workers take it at once.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ConsumerError> {
        self.config.validate()?;
        let table_error = |source| ConsumerError::LeaseTable {
            table: self.table.name().to_string(),
            source,
        };
        // Start-up steps retry passing failures for a while; anything else stops the start.
        let started = retry(&RetryPolicy::START, &shutdown, || {
            self.table
                .ensure_exists(self.config.create_lease_table)
                .map(|r| r.map_err(table_error))
        })
        .await;
        match started {
            Ok(()) => {}
            Err(RetryError::Stopped { .. }) => return Ok(()),
            Err(RetryError::Failed { error, .. }) => return Err(error),
        }
        let mut worker = Worker {
            consumer: &self,
            held: HashMap::new(),
            tracker: ExpiryTracker::default(),
            shard_tasks_stop: CancellationToken::new(),
            events: mpsc::unbounded_channel(),
            generation: 0,
            abandoned: false,
            panicked: HashMap::new(),
        };
        let synced = retry(&RetryPolicy::START, &shutdown, || worker.sync_shards()).await;
        match synced {
            Ok(()) => {}
            Err(RetryError::Stopped { .. }) => return Ok(()),
            Err(RetryError::Failed { error, .. }) => return Err(error),
        }
        tracing::info!(
            application = %self.config.application,
            worker_id = %self.config.worker_id,
            source = %self.source.describe(),
            lease_table = %self.table.name(),
            "consumer started"
        );

        let mut renew = tokio::time::interval(self.config.renewal_interval);
        let mut take = tokio::time::interval(self.config.taker_interval);
        let mut sync = tokio::time::interval(self.config.shard_sync_interval);
        for timer in [&mut renew, &mut take, &mut sync] {
            timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
        }
        sync.tick().await;
        let failure = loop {
            tokio::select! {
                () = shutdown.cancelled() => break None,
                _ = renew.tick() => worker.renew_all().await,
                _ = take.tick() => {
                    if let Err(error) = worker.take_leases().await {
                        let error = table_error(error);
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
                Some((shard_id, generation, outcome, error)) = worker.events.1.recv() => {
                    if let Some(error) = error {
                        break Some(error.into());
                    }
                    worker.shard_finished(&shard_id, generation, outcome).await;
                }
            }
        };
        match failure {
            None => {
                worker.stop(&mut renew).await;
                Ok(())
            }
            Some(error) => {
                // A process that cannot work stops at once: every shard gives up what it
                // has not made durable (the next owner reads it again) and the leases are
                // released, so other workers take them while this one is restarted.
                tracing::error!(application = %self.config.application, %error, "stopping the consumer");
                worker.abandon();
                worker.stop(&mut renew).await;
                Err(error)
            }
        }
    }
}

struct Worker<'a, S, F> {
    consumer: &'a Consumer<S, F>,
    held: HashMap<String, HeldLease>,
    tracker: ExpiryTracker,
    shard_tasks_stop: CancellationToken,
    events: (mpsc::UnboundedSender<ShardEvent>, mpsc::UnboundedReceiver<ShardEvent>),
    generation: u64,
    /// The consumer stops on a failure: shard tasks give their work up.
    abandoned: bool,
    /// When a shard's task last panicked on this worker.
    panicked: HashMap<String, Instant>,
}

impl<S: Source, F: ProcessorFactory<S::Record>> Worker<'_, S, F> {
    fn application(&self) -> &str {
        &self.consumer.config.application
    }

    fn publish_held(&self) {
        self.consumer.metrics.gauge(
            "LeasesHeld",
            self.held.len() as f64,
            Unit::Count,
            &[("Application", self.application())],
        );
    }

    /// Creates leases for shards that have none, and deletes finished leases once
    /// every child has started.
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
        let table_error = |source| ConsumerError::LeaseTable {
            table: consumer.table.name().to_string(),
            source,
        };
        let leases = consumer.table.list().await.map_err(table_error)?;
        let plan = plan_shard_leases(&shards, &leases, consumer.config.initial_position);
        for lease in &plan.create {
            if consumer.table.create(lease).await.map_err(table_error)? {
                tracing::info!(application = %self.application(), shard_id = %lease.key, checkpoint = %lease.checkpoint, parents = ?lease.parent_shard_ids, "lease created");
            }
        }
        for key in &plan.delete {
            consumer.table.delete_finished(key).await.map_err(table_error)?;
            tracing::info!(application = %self.application(), shard_id = %key, "finished lease deleted");
        }
        Ok(())
    }

    async fn renew_all(&mut self) {
        let consumer = self.consumer;
        let mut lost = Vec::new();
        for (key, held) in &mut self.held {
            let mut hold = held.hold.lock().await;
            if hold.lost {
                continue;
            }
            match consumer
                .table
                .renew(key, &consumer.config.worker_id, hold.counter)
                .await
            {
                Ok(counter) => {
                    hold.counter = counter;
                    held.last_renewed = Instant::now();
                }
                Err(error) if error.is_condition_failed() => {
                    hold.lost = true;
                    lost.push(key.clone());
                }
                Err(error) => {
                    if assignment::renewal_overdue(
                        held.last_renewed,
                        consumer.config.renewal_interval,
                        consumer.config.failover,
                    ) {
                        hold.lost = true;
                        lost.push(key.clone());
                    }
                    tracing::warn!(shard_id = %key, %error, "lease renewal failed");
                }
            }
        }
        for key in lost {
            if let Some(held) = self.held.remove(&key) {
                held.lost.cancel();
            }
        }
        self.publish_held();
    }

    async fn take_leases(&mut self) -> Result<(), LeaseTableError> {
        let consumer = self.consumer;
        let config = &consumer.config;
        let leases = consumer.table.list().await?;
        let expired = self.tracker.observe(&leases, Instant::now(), config.failover);
        // Leases we still hold count as ours whatever the snapshot says about their age.
        let expired: HashSet<String> = expired.into_iter().filter(|key| !self.held.contains_key(key)).collect();
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
            if self
                .panicked
                .get(key)
                .is_some_and(|at| at.elapsed() < config.failover * 3)
            {
                continue;
            }
            match consumer.table.take(lease, &config.worker_id).await {
                Ok(counter) => {
                    let metric = if stolen { "LeasesStolen" } else { "LeasesTaken" };
                    consumer
                        .metrics
                        .count(metric, 1, &[("Application", self.application())]);
                    tracing::info!(application = %self.application(), shard_id = %key, from = ?lease.owner, stolen, "lease taken");
                    self.start_shard(lease, counter);
                }
                Err(error) if error.is_condition_failed() => {
                    tracing::debug!(shard_id = %key, "another worker took the lease first");
                }
                Err(error) => return Err(error),
            }
        }
        self.publish_held();
        Ok(())
    }

    fn start_shard(&mut self, lease: &Lease, counter: u64) {
        let consumer = self.consumer;
        let hold = Arc::new(Mutex::new(LeaseHold {
            counter,
            checkpoint: lease.checkpoint.clone(),
            lost: false,
        }));
        let lost = CancellationToken::new();
        let task = ShardTask {
            source: consumer.source.clone(),
            factory: consumer.factory.clone(),
            table: consumer.table.clone(),
            config: consumer.config.clone(),
            metrics: consumer.metrics.clone(),
            shard_id: lease.key.clone(),
            parent_shard_ids: lease.parent_shard_ids.clone(),
            hold: hold.clone(),
            lost: lost.clone(),
            shutdown: self.shard_tasks_stop.clone(),
        };
        let events = self.events.0.clone();
        let shard_id = lease.key.clone();
        self.generation += 1;
        let generation = self.generation;
        let metrics = consumer.metrics.clone();
        let application = consumer.config.application.clone();
        let task = tokio::spawn(async move {
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
        let held = HeldLease {
            generation,
            hold,
            lost,
            last_renewed: Instant::now(),
            task: Some(task),
        };
        if let Some(previous) = self.held.insert(lease.key.clone(), held) {
            previous.lost.cancel();
        }
    }

    async fn shard_finished(&mut self, shard_id: &str, generation: u64, outcome: ShardOutcome) {
        if self.held.get(shard_id).is_none_or(|held| held.generation != generation) {
            return;
        }
        // A finished lease stays in the table (its children check it) but needs no renewal.
        let Some(held) = self.held.remove(shard_id) else {
            return;
        };
        if outcome == ShardOutcome::Panicked {
            self.panicked.insert(shard_id.to_string(), Instant::now());
            // Not renewed with no reader behind it: give it up for any worker to take.
            let consumer = self.consumer;
            let counter = held.hold.lock().await.counter;
            if let Err(error) = consumer
                .table
                .release(shard_id, &consumer.config.worker_id, counter)
                .await
            {
                tracing::warn!(%shard_id, %error, "lease release after a panic failed; it expires after the failover time");
            }
        }
        if outcome == ShardOutcome::Ended
            && let Err(error) = self.sync_shards().await
        {
            tracing::warn!(%error, "shard sync after SHARD_END failed");
        }
        self.publish_held();
    }

    /// Tells every shard task to stop without making anything more durable: their work
    /// stops as on a lost lease (nothing is checkpointed), but the leases are still
    /// this worker's to release.
    fn abandon(&mut self) {
        self.abandoned = true;
        for held in self.held.values() {
            held.lost.cancel();
        }
    }

    /// Stops every shard task (renewing meanwhile, so no lease expires during the
    /// flush), then releases the leases.
    async fn stop(mut self, renew: &mut tokio::time::Interval) {
        self.shard_tasks_stop.cancel();
        let tasks: Vec<JoinHandle<()>> = self.held.values_mut().filter_map(|held| held.task.take()).collect();
        let aborts: Vec<_> = tasks.iter().map(JoinHandle::abort_handle).collect();
        let mut waiting = futures::future::join_all(tasks);
        // Abandoned work is given a failover time to notice, then cut off: a processor
        // retrying a write must not keep a failed process alive.
        let cutoff = self.abandoned.then_some(self.consumer.config.failover);
        let deadline = async move {
            match cutoff {
                Some(after) => tokio::time::sleep(after).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut waiting => break,
                () = &mut deadline => {
                    aborts.iter().for_each(tokio::task::AbortHandle::abort);
                    tracing::warn!("shard tasks did not stop within the failover time; aborted");
                    break;
                }
                _ = renew.tick() => self.renew_all().await,
            }
        }
        let consumer = self.consumer;
        for (key, held) in &self.held {
            let hold = held.hold.lock().await;
            if hold.lost || hold.checkpoint.is_shard_end() {
                continue;
            }
            // (`hold.lost` is the table's verdict; an abandoned lease is still ours.)
            match consumer
                .table
                .release(key, &consumer.config.worker_id, hold.counter)
                .await
            {
                Ok(()) => tracing::info!(application = %consumer.config.application, shard_id = %key, "lease released"),
                Err(error) => {
                    tracing::warn!(shard_id = %key, %error, "lease release failed; it expires after the failover time")
                }
            }
        }
        self.held.clear();
        self.publish_held();
        tracing::info!(application = %consumer.config.application, "consumer stopped");
    }
}

/// What shard sync writes: leases to create and finished leases to delete.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardLeasePlan {
    pub create: Vec<Lease>,
    pub delete: Vec<String>,
}

/// Decides lease creation and cleanup from the shard list and the lease table (pure).
///
/// - A shard without a lease gets one. A child of a reshard starts at TRIM_HORIZON
///   (nothing written to it may be skipped); a shard without parents in the stream
///   starts at the configured initial position. With LATEST or AT_TIMESTAMP, closed
///   shards without a lease are skipped: their records are all older than the start.
/// - A lease at SHARD_END is deleted once each of its shard's children has a lease
///   that moved past its starting point (or the shard left the stream); a closed shard
///   whose child has a lease never gets a lease again.
pub fn plan_shard_leases(shards: &[Shard], leases: &[Lease], initial: InitialPosition) -> ShardLeasePlan {
    let leased: HashSet<&str> = leases.iter().map(|l| l.key.as_str()).collect();
    let in_stream: HashSet<&str> = shards.iter().map(|s| s.id.as_str()).collect();
    let mut plan = ShardLeasePlan::default();
    let mut ordered: Vec<&Shard> = shards.iter().collect();
    ordered.sort_by(|a, b| a.id.cmp(&b.id));
    for shard in ordered {
        if leased.contains(shard.id.as_str()) {
            continue;
        }
        // A closed shard whose child has a lease was read to its end: its own lease was
        // deleted once the children started. A new one would read it all again and hold
        // its children back meanwhile.
        let child_leased = shards
            .iter()
            .any(|s| s.parent_ids.contains(&shard.id) && leased.contains(s.id.as_str()));
        if shard.closed && child_leased {
            continue;
        }
        let has_parent_in_stream = shard
            .parent_ids
            .iter()
            .any(|p| in_stream.contains(p.as_str()) || leased.contains(p.as_str()));
        let checkpoint = if has_parent_in_stream {
            Checkpoint::TrimHorizon
        } else {
            match initial {
                InitialPosition::TrimHorizon => Checkpoint::TrimHorizon,
                InitialPosition::Latest if shard.closed => continue,
                InitialPosition::Latest => Checkpoint::Latest,
                InitialPosition::AtTimestamp(_) if shard.closed => continue,
                InitialPosition::AtTimestamp(_) => Checkpoint::AtTimestamp,
            }
        };
        let mut parents = shard.parent_ids.clone();
        parents.sort();
        plan.create.push(Lease::new(&shard.id, checkpoint, parents));
    }
    for lease in leases.iter().filter(|l| l.checkpoint.is_shard_end()) {
        let children: Vec<&Shard> = shards.iter().filter(|s| s.parent_ids.contains(&lease.key)).collect();
        let gone = !in_stream.contains(lease.key.as_str());
        let children_started = !children.is_empty()
            && children.iter().all(|child| {
                leases.iter().any(|l| {
                    l.key == child.id
                        && !matches!(
                            l.checkpoint,
                            Checkpoint::TrimHorizon | Checkpoint::Latest | Checkpoint::AtTimestamp
                        )
                })
            });
        if children_started || (gone && children.is_empty()) {
            plan.delete.push(lease.key.clone());
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::position::{RecordPosition, SequenceNumber};

    fn shard(id: &str, parents: &[&str], closed: bool) -> Shard {
        Shard {
            id: id.into(),
            parent_ids: parents.iter().map(|p| p.to_string()).collect(),
            closed,
        }
    }

    fn at(seq: &str) -> Checkpoint {
        Checkpoint::At(RecordPosition {
            sequence: SequenceNumber::parse(seq).expect("digits"),
            subsequence: 0,
        })
    }

    #[test]
    fn children_of_a_split_start_at_the_horizon_even_with_latest() {
        let shards = [
            shard("s0", &[], true),
            shard("s1", &["s0"], false),
            shard("s2", &["s0"], false),
        ];
        let plan = plan_shard_leases(&shards, &[], InitialPosition::Latest);
        let keys: Vec<(&str, &Checkpoint)> = plan.create.iter().map(|l| (l.key.as_str(), &l.checkpoint)).collect();
        assert_eq!(
            keys,
            vec![("s1", &Checkpoint::TrimHorizon), ("s2", &Checkpoint::TrimHorizon)]
        );
    }

    #[test]
    fn trim_horizon_leases_every_shard_with_its_lineage() {
        let shards = [
            shard("s0", &[], true),
            shard("s1", &[], true),
            shard("s2", &["s1", "s0"], false),
        ];
        let plan = plan_shard_leases(&shards, &[], InitialPosition::TrimHorizon);
        assert_eq!(plan.create.len(), 3);
        assert_eq!(
            plan.create[2].parent_shard_ids,
            vec!["s0".to_string(), "s1".to_string()]
        );
    }

    #[test]
    fn existing_leases_are_left_alone() {
        let shards = [shard("s0", &[], false)];
        let leases = [Lease::new("s0", at("5"), vec![])];
        assert_eq!(
            plan_shard_leases(&shards, &leases, InitialPosition::TrimHorizon),
            ShardLeasePlan::default()
        );
    }

    #[test]
    fn a_finished_lease_is_deleted_only_after_its_children_started() {
        let shards = [
            shard("s0", &[], true),
            shard("s1", &["s0"], false),
            shard("s2", &["s0"], false),
        ];
        let mut leases = vec![
            Lease::new("s0", Checkpoint::ShardEnd, vec![]),
            Lease::new("s1", at("10"), vec!["s0".into()]),
            Lease::new("s2", Checkpoint::TrimHorizon, vec!["s0".into()]),
        ];
        assert!(
            plan_shard_leases(&shards, &leases, InitialPosition::TrimHorizon)
                .delete
                .is_empty()
        );
        leases[2].checkpoint = at("11");
        assert_eq!(
            plan_shard_leases(&shards, &leases, InitialPosition::TrimHorizon).delete,
            vec!["s0".to_string()]
        );
    }

    #[test]
    fn a_finished_shard_whose_lease_was_deleted_is_not_leased_again() {
        // A split then a merge: s0 -> s1 + s2, then s2 + s3 -> s4 (s3 an original shard).
        let shards = [
            shard("s0", &[], true),
            shard("s1", &["s0"], false),
            shard("s2", &["s0"], true),
            shard("s3", &[], true),
            shard("s4", &["s2", "s3"], false),
        ];
        // Every finished lease was cleaned up once its children started.
        let leases = [
            Lease::new("s1", at("20"), vec!["s0".into()]),
            Lease::new("s4", at("30"), vec!["s2".into(), "s3".into()]),
        ];
        assert_eq!(
            plan_shard_leases(&shards, &leases, InitialPosition::TrimHorizon),
            ShardLeasePlan::default(),
            "re-creating s0, s2 or s3 would read them again and hold s1 and s4 back"
        );
    }
}
