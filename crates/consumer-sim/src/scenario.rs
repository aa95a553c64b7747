//! One run: a seed decides the stream, the fleet, the fault rates and every event; the
//! run plays them on tokio's paused clock, checks the invariants as it goes, then calms
//! down (no faults, every worker up, no more records), waits for the consumer to catch
//! up, stops every worker gracefully and makes its final checks.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shard_consumer::assignment::is_waiting;
use shard_consumer::lease::Lease;
use shard_consumer::{ConsumerConfig, InitialPosition};
use tokio::task::JoinHandle;

use crate::faults::{FaultRates, Faults};
use crate::fleet::{Worker, spawn_worker};
use crate::lease_table::TableModel;
use crate::observer::Observer;
use crate::processor::Shared;
use crate::report::{Report, WorkerEvents, sum_counters};
use crate::stream::{Flavor, StreamModel, StreamSettings};
use crate::world::{World, lock};

const HOUR: Duration = Duration::from_secs(3600);

/// Everything a run does, decided by its seed (and its length).
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub seed: u64,
    pub days: f64,
    pub flavor: Flavor,
    /// Open shards at the start.
    pub shards: usize,
    pub workers: usize,
    pub failover: Duration,
    pub max_leases: Option<usize>,
    /// 1.0: every fault at the rates of [`FaultRates::at_level`].
    pub fault_level: f64,
    /// Mean time between two worker events (a kill, a graceful stop, a stall).
    pub chaos_every: Duration,
    /// The whole fleet down for a while (start, length): long enough for records to be
    /// trimmed unread and shards to leave the stream.
    pub outage: Option<(Duration, Duration)>,
    /// Pause between two reads of a shard.
    pub idle_between_reads: Duration,
}

impl Scenario {
    /// The scenario of `seed`, `days` long.
    pub fn from_seed(seed: u64, days: f64) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed ^ 0x5eed_5eed_5eed_5eed);
        let flavor = if seed.is_multiple_of(2) {
            Flavor::Kinesis
        } else {
            Flavor::DynamoDbStreams
        };
        let shards = 2 + rng.usize(..3);
        let workers = 2 + rng.usize(..3);
        let max_leases = (rng.f64() < 0.25).then(|| (shards * 2).div_ceil(workers) + 1);
        let fault_level = [0.5, 1.0, 2.0][rng.usize(..3)];
        let active = Duration::from_secs_f64(days * 86_400.0);
        let outage_length = Duration::from_secs(rng.u64(25 * 3600..=28 * 3600));
        let outage = (rng.f64() < 0.2 && active > outage_length + 8 * HOUR).then(|| {
            let latest = active - outage_length - 2 * HOUR;
            (Duration::from_secs(rng.u64(3 * 3600..=latest.as_secs())), outage_length)
        });
        Self {
            seed,
            days,
            flavor,
            shards,
            workers,
            failover: Duration::from_secs(10),
            max_leases,
            fault_level,
            chaos_every: Duration::from_secs(20 * 60),
            outage,
            idle_between_reads: Duration::from_secs(1),
        }
    }

    /// Time with records, reshards and chaos; the calm-down follows.
    pub fn active(&self) -> Duration {
        Duration::from_secs_f64(self.days * 86_400.0)
    }

    /// The command that replays this run exactly.
    pub fn replay_command(&self) -> String {
        format!(
            "SIM_SEED={} SIM_DAYS={} cargo test -p consumer-sim --test simulation -- --nocapture",
            self.seed, self.days
        )
    }
}

/// Runs `scenario` on a paused current-thread runtime and reports what happened.
pub fn run(scenario: &Scenario) -> Report {
    let started = std::time::Instant::now();
    // The consumer's jitter draws from fastrand's thread-local generator: seed it too.
    fastrand::seed(scenario.seed);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build();
    let mut report = match runtime {
        // The run is made inside the runtime: its clock's origin must be the paused clock's.
        Ok(runtime) => runtime.block_on(async { Run::new(scenario.clone()).play().await }),
        Err(error) => Report::failed(scenario.clone(), format!("no runtime: {error}")),
    };
    report.wall = started.elapsed();
    report
}

enum SlotState {
    Running,
    Stopping,
    Dead { restart_at: Option<Duration> },
}

/// A place for one worker process; a restart puts a new worker (a new id) in it.
struct Slot {
    worker: Worker,
    state: SlotState,
    started_at: Duration,
    stopper: Option<JoinHandle<()>>,
}

struct Run {
    scenario: Scenario,
    world: Arc<World>,
    stream: Arc<Mutex<StreamModel>>,
    table: Arc<Mutex<TableModel>>,
    observer: Arc<Observer>,
    faults: Arc<Faults>,
    slots: Vec<Slot>,
    workers_made: usize,
    events: WorkerEvents,
    counters: BTreeMap<String, f64>,
    /// Since when some worker could take a free lease.
    able_since: Option<Duration>,
    /// Leases already reported unowned for too long (key, since when).
    reported_unowned: BTreeSet<(String, Duration)>,
    /// Workers killed (not stopped): their entries may stay in the worker table.
    killed: BTreeSet<String>,
}

impl Run {
    fn new(scenario: Scenario) -> Self {
        let world = Arc::new(World::new(scenario.seed));
        let observer = Arc::new(Observer::default());
        let mut settings = StreamSettings::new(scenario.flavor, scenario.shards, scenario.active());
        settings.max_open = scenario.shards * 2;
        let stream = Arc::new(Mutex::new(StreamModel::new(world.clone(), settings)));
        let table = Arc::new(Mutex::new(TableModel::new(scenario.failover, observer.clone())));
        let faults = Arc::new(Faults::new(world.clone(), FaultRates::at_level(scenario.fault_level)));
        Self {
            scenario,
            world,
            stream,
            table,
            observer,
            faults,
            slots: Vec::new(),
            workers_made: 0,
            events: WorkerEvents::default(),
            counters: BTreeMap::new(),
            able_since: None,
            reported_unowned: BTreeSet::new(),
            killed: BTreeSet::new(),
        }
    }

    fn shared(&self) -> Shared {
        Shared {
            world: self.world.clone(),
            stream: self.stream.clone(),
            table: self.table.clone(),
            observer: self.observer.clone(),
            failover: self.scenario.failover,
        }
    }

    /// Starts a new worker in slot `index` (or a new slot).
    fn start_worker(&mut self, index: Option<usize>) {
        self.workers_made += 1;
        let id = format!("w{}", self.workers_made);
        let mut config = ConsumerConfig::new("sim", &id).with_failover(self.scenario.failover);
        config.idle_between_reads = self.scenario.idle_between_reads;
        config.max_records_per_read = 500;
        config.initial_position = InitialPosition::TrimHorizon;
        if let Some(max) = self.scenario.max_leases {
            config.max_leases_per_worker = max;
        }
        let slot = Slot {
            worker: spawn_worker(&self.shared(), &self.faults, config),
            state: SlotState::Running,
            started_at: self.world.now(),
            stopper: None,
        };
        match index {
            Some(i) => {
                self.collect_metrics(i);
                self.slots[i] = slot;
            }
            None => self.slots.push(slot),
        }
    }

    fn collect_metrics(&mut self, index: usize) {
        let documents = self.slots[index].worker.metrics.take_documents(0);
        sum_counters(&documents, &mut self.counters);
    }

    /// A worker that ended by itself did so with an error: a violation of its own.
    fn reap(&mut self) {
        let now = self.world.now();
        for slot in &mut self.slots {
            let finished = slot.worker.handle.as_ref().is_some_and(JoinHandle::is_finished);
            if finished && matches!(slot.state, SlotState::Running) {
                let handle = slot.worker.handle.take();
                slot.state = SlotState::Dead {
                    restart_at: Some(now + Duration::from_secs(30)),
                };
                if let Some(handle) = handle {
                    let outcome = futures::FutureExt::now_or_never(handle);
                    if let Some(Ok(Err(error))) = outcome {
                        self.observer
                            .violation(now, format!("worker {} stopped with an error: {error}", slot.worker.id));
                    }
                }
            }
        }
    }

    fn kill(&mut self, index: usize, restart_at: Option<Duration>) {
        let slot = &mut self.slots[index];
        slot.worker.abort.abort();
        slot.worker.handle = None;
        slot.state = SlotState::Dead { restart_at };
        self.killed.insert(slot.worker.id.clone());
        self.observer.trace(&format!("kill {}", slot.worker.id));
    }

    /// SIGTERM: the worker flushes and releases; after the shutdown deadline it is killed.
    fn stop_gracefully(&mut self, index: usize) {
        let slot = &mut self.slots[index];
        slot.worker.shutdown.cancel();
        slot.state = SlotState::Stopping;
        self.observer.trace(&format!("stop {}", slot.worker.id));
        if let Some(mut handle) = slot.worker.handle.take() {
            let world = self.world.clone();
            let observer = self.observer.clone();
            let id = slot.worker.id.clone();
            slot.stopper = Some(tokio::spawn(async move {
                match tokio::time::timeout(Duration::from_secs(25), &mut handle).await {
                    Ok(Ok(Err(error))) => {
                        observer.violation(world.now(), format!("worker {id} stopped with an error: {error}"));
                    }
                    Ok(_) => {}
                    Err(_) => handle.abort(),
                }
            }));
        }
    }

    fn is_stopped(&self, index: usize) -> bool {
        let slot = &self.slots[index];
        matches!(slot.state, SlotState::Stopping) && slot.stopper.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// One chaos event on a random slot.
    fn chaos(&mut self) {
        let now = self.world.now();
        let index = self.world.below(self.slots.len());
        let restart_at = Some(now + self.world.between(Duration::from_secs(5), Duration::from_secs(180)));
        match self.slots[index].state {
            SlotState::Dead { .. } | SlotState::Stopping => {}
            SlotState::Running => match self.world.below(100) {
                0..35 => {
                    self.events.kills += 1;
                    self.kill(index, restart_at);
                }
                35..60 => {
                    self.events.graceful_stops += 1;
                    self.stop_gracefully(index);
                }
                _ => {
                    // A stall past the failover time, as a long GC pause or a frozen host.
                    self.events.stalls += 1;
                    let failover = self.scenario.failover;
                    let stall = self.world.between(failover * 3 / 2, failover * 6);
                    let slot = &self.slots[index];
                    slot.worker.gate.close_until(self.world.instant(now + stall));
                    self.observer.trace(&format!("stall {} {stall:?}", slot.worker.id));
                }
            },
        }
    }

    /// Restarts workers whose time has come; stopped ones get a restart time.
    fn restart_due(&mut self, everyone: bool) {
        let now = self.world.now();
        for index in 0..self.slots.len() {
            if self.is_stopped(index) {
                let delay = self.world.between(Duration::from_secs(5), Duration::from_secs(120));
                self.slots[index].state = SlotState::Dead {
                    restart_at: Some(now + delay),
                };
            }
            if let SlotState::Dead { restart_at } = self.slots[index].state
                && (everyone || restart_at.is_some_and(|at| at <= now))
            {
                self.events.restarts += 1;
                self.start_worker(Some(index));
            }
        }
    }

    /// No lease stays takeable for over 2 x failover while some worker could take it.
    fn check_unowned(&mut self) {
        let now = self.world.now();
        let failover = self.scenario.failover;
        let table = lock(&self.table);
        let leases: Vec<Lease> = table.leases().map(|(l, _)| l.clone()).collect();
        let load = |id: &str| {
            leases
                .iter()
                .filter(|l| l.owner.as_deref() == Some(id) && !l.checkpoint.is_shard_end() && !is_waiting(l, &leases))
                .count()
        };
        let able = self.slots.iter().any(|slot| {
            matches!(slot.state, SlotState::Running)
                && !slot.worker.gate.is_closed()
                && now.saturating_sub(slot.started_at) >= failover
                && self.scenario.max_leases.is_none_or(|max| load(&slot.worker.id) < max)
        });
        self.able_since = if able {
            Some(self.able_since.unwrap_or(now))
        } else {
            None
        };
        let Some(able_since) = self.able_since else {
            return;
        };
        let mut late = Vec::new();
        for (lease, meta) in table.leases() {
            if lease.checkpoint.is_shard_end() {
                continue;
            }
            let Some(takeable_since) = table.takeable_since(lease, meta, now) else {
                continue;
            };
            let since = takeable_since.max(able_since);
            if now > since + failover * 2 && !self.reported_unowned.contains(&(lease.key.clone(), takeable_since)) {
                late.push((lease.key.clone(), takeable_since, lease.owner.clone()));
            }
        }
        drop(table);
        self.observer.checked(1);
        for (key, since, owner) in late {
            self.observer.violation(
                now,
                format!("lease {key} (owner {owner:?}) takeable since {since:?} and still not taken, with a worker free to take it"),
            );
            self.reported_unowned.insert((key, since));
        }
    }

    /// Whether every record is handed over (or gone unread past retention) and every
    /// closed shard reached SHARD_END.
    fn caught_up(&self) -> bool {
        let now = self.world.now();
        let mut stream = lock(&self.stream);
        // Records are made when the stream is touched: make every one due by now.
        stream.advance(now);
        let table = lock(&self.table);
        stream.shards().iter().all(|shard| {
            let trimmed = stream.trimmed(shard, now);
            let delivered = (trimmed..shard.records.len()).all(|i| self.observer.was_delivered(&shard.id, i));
            let ended = shard.closed.is_none() || table.is_finished(&shard.id) || !stream.is_listed(shard, now);
            delivered && ended
        })
    }

    async fn play(mut self) -> Report {
        for _ in 0..self.scenario.workers {
            self.start_worker(None);
        }
        let active = self.scenario.active();
        let mut next_chaos = self.world.exponential(self.scenario.chaos_every);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut outage_done = false;
        loop {
            tick.tick().await;
            let now = self.world.now();
            if now >= active {
                break;
            }
            self.reap();
            self.check_unowned();
            if now.as_secs().is_multiple_of(60) {
                for index in 0..self.slots.len() {
                    self.collect_metrics(index);
                }
            }
            match self.scenario.outage {
                Some((start, length)) if now >= start && !outage_done => {
                    if now < start + length {
                        if self.slots.iter().any(|s| !matches!(s.state, SlotState::Dead { .. })) {
                            self.events.outages += 1;
                            for index in 0..self.slots.len() {
                                self.kill(index, None);
                            }
                        }
                        continue;
                    }
                    outage_done = true;
                    self.restart_due(true);
                }
                _ => {}
            }
            if now >= next_chaos {
                self.chaos();
                next_chaos = now + self.world.exponential(self.scenario.chaos_every);
            }
            self.restart_due(false);
        }
        self.calm_down().await
    }

    async fn calm_down(mut self) -> Report {
        let active = self.scenario.active();
        self.faults.set_rates(FaultRates::NONE);
        self.restart_due(true);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let limit = active + 2 * HOUR;
        loop {
            tick.tick().await;
            let now = self.world.now();
            self.reap();
            self.restart_due(false);
            self.check_unowned();
            if (now.as_secs().is_multiple_of(10) && self.caught_up()) || now >= limit {
                break;
            }
        }
        let caught_up = self.world.now().saturating_sub(active);
        for index in 0..self.slots.len() {
            if matches!(self.slots[index].state, SlotState::Running) {
                self.stop_gracefully(index);
            }
        }
        for index in 0..self.slots.len() {
            if let Some(stopper) = self.slots[index].stopper.take() {
                let _ = stopper.await;
            }
            self.collect_metrics(index);
        }
        let lost_to_trim = self.final_checks();
        let usage = lock(&self.table).usage();
        let stream = lock(&self.stream).counts();
        Report {
            scenario: self.scenario.clone(),
            simulated: self.world.now(),
            caught_up,
            stream,
            deliveries: self.observer.deliveries(),
            lost_to_trim,
            faults: self.faults.counts(),
            events: self.events,
            counters: std::mem::take(&mut self.counters),
            usage,
            violations: self.observer.violations(),
            digest: self.observer.digest(),
            wall: Duration::ZERO,
        }
    }

    /// The checks once everything stopped; returns how many records were trimmed unread.
    fn final_checks(&self) -> u64 {
        let now = self.world.now();
        let mut stream = lock(&self.stream);
        stream.advance(now);
        let table = lock(&self.table);
        let outage = self.scenario.outage.is_some();
        let mut lost = 0;
        for shard in stream.shards() {
            let undelivered: Vec<usize> = (0..shard.records.len())
                .filter(|&i| !self.observer.was_delivered(&shard.id, i))
                .collect();
            let trimmed = stream.trimmed(shard, now);
            let readable: Vec<&usize> = undelivered.iter().filter(|&&i| i >= trimmed).collect();
            lost += (undelivered.len() - readable.len()) as u64;
            if let Some(first) = readable.first() {
                self.observer.violation(
                    now,
                    format!(
                        "{} records of {} never handed over though still in the stream (first: #{first})",
                        readable.len(),
                        shard.id
                    ),
                );
            }
            if !outage && !undelivered.is_empty() {
                self.observer.violation(
                    now,
                    format!(
                        "{} records of {} trimmed before they were read, with no outage",
                        undelivered.len(),
                        shard.id
                    ),
                );
            }
            let listed = stream.is_listed(shard, now);
            if shard.closed.is_some() && !table.is_finished(&shard.id) && (listed || !outage) {
                self.observer
                    .violation(now, format!("closed shard {} never reached SHARD_END", shard.id));
            }
        }
        for (lease, _) in table.leases() {
            if let Some(owner) = &lease.owner
                && !lease.checkpoint.is_shard_end()
            {
                self.observer.violation(
                    now,
                    format!(
                        "lease {} still owned by {owner} after every worker stopped gracefully",
                        lease.key
                    ),
                );
            }
        }
        for worker in table.workers() {
            if !self.killed.contains(&worker.entry.worker_id) {
                self.observer.violation(
                    now,
                    format!(
                        "worker {} left its entry behind after stopping gracefully",
                        worker.entry.worker_id
                    ),
                );
            }
        }
        self.observer.checked(stream.shards().len() as u64 * 3);
        lost
    }
}
