//! Scale on paper, by the simulator: a fleet of real consumers on a stream of many
//! shards, with no faults and no records (a checkpoint costs the same write in any
//! design), measured for
//! - how long the leases take to balance after a cold start, after a tenth of the
//!   workers die, after a tenth more start, and through a rolling deploy that replaces
//!   every worker a tenth at a time (each stopped gracefully);
//! - how long a shard goes without a reader in each of those;
//! - what the lease and worker tables are asked per hour once balanced, and what that
//!   costs on demand, beside the same figures for the Java KCL 2.x's defaults
//!   ([`Kcl2Model`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shard_consumer::{ConsumerConfig, InitialPosition};
use tokio::task::JoinHandle;

use crate::faults::{FaultRates, Faults};
use crate::fleet::{Worker, spawn_worker};
use crate::lease_table::{Request, TableModel, item_size};
use crate::observer::Observer;
use crate::processor::Shared;
use crate::stream::{Flavor, StreamModel, StreamSettings};
use crate::world::{World, lock};

/// DynamoDB on-demand prices in us-east-1 (since November 2024), dollars per million units.
pub const DOLLARS_PER_MILLION_WRU: f64 = 0.625;
pub const DOLLARS_PER_MILLION_RRU: f64 = 0.125;
/// Hours in an average month.
pub const HOURS_PER_MONTH: f64 = 730.0;

/// What one measurement runs.
#[derive(Debug, Clone, PartialEq)]
pub struct ScaleSettings {
    pub shards: usize,
    pub workers: usize,
    pub seed: u64,
    pub failover: Duration,
    pub idle_between_reads: Duration,
    /// How long the steady state is measured for table traffic.
    pub steady: Duration,
    /// A phase that has not balanced after this long is reported as not balanced.
    pub patience: Duration,
}

impl ScaleSettings {
    pub fn new(shards: usize, workers: usize) -> Self {
        Self {
            shards,
            workers,
            seed: 1,
            failover: Duration::from_secs(10),
            idle_between_reads: Duration::from_secs(1),
            steady: Duration::from_secs(3600),
            patience: Duration::from_secs(1800),
        }
    }

    /// A tenth of the fleet, at least one worker.
    pub fn tenth(&self) -> usize {
        (self.workers / 10).max(1)
    }
}

/// One phase of the measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct Phase {
    pub name: &'static str,
    /// From the phase's first event until every lease is held by a running worker and
    /// every running worker holds its share (⌊n/w⌋ or ⌈n/w⌉); `None`: not within the patience.
    pub balanced_after: Option<Duration>,
    /// The longest any shard went without a reader (a live holder).
    pub longest_unread: Duration,
    /// Shard-seconds without a reader, summed.
    pub unread_shard_seconds: f64,
}

/// Requests and units per hour of one kind.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Hourly {
    pub requests: f64,
    pub read_units: f64,
    pub write_units: f64,
}

impl Hourly {
    pub fn dollars_per_month(&self) -> f64 {
        (self.read_units * DOLLARS_PER_MILLION_RRU + self.write_units * DOLLARS_PER_MILLION_WRU) / 1e6 * HOURS_PER_MONTH
    }
}

/// The measurement's results.
#[derive(Debug, Clone, PartialEq)]
pub struct ScaleReport {
    pub settings: ScaleSettings,
    pub phases: Vec<Phase>,
    /// Per hour in the steady state, by kind of request.
    pub steady: Vec<(Request, Hourly)>,
    pub kcl: Kcl2Model,
    /// Invariant violations seen on the way (none expected).
    pub violations: Vec<(Duration, String)>,
    pub wall: Duration,
}

impl ScaleReport {
    pub fn steady_total(&self) -> Hourly {
        self.steady.iter().fold(Hourly::default(), |total, (_, h)| Hourly {
            requests: total.requests + h.requests,
            read_units: total.read_units + h.read_units,
            write_units: total.write_units + h.write_units,
        })
    }
}

/// The Java KCL 2.x's lease-table traffic with its defaults, by formula (the shape of
/// `DynamoDBLeaseCoordinator`): every worker renews each lease it holds every
/// `failover / 3 - 25 ms` (a conditional UpdateItem, 1 WRU), and scans the whole table
/// every `2 × (failover + 25 ms)` to take and steal (eventually consistent: half a unit
/// per 4 KB).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Kcl2Model {
    /// Bytes of one lease item: ours, plus the hash key range KCL 2.x keeps on each.
    pub item_bytes: usize,
    pub renewals: Hourly,
    pub scans: Hourly,
}

impl Kcl2Model {
    const EPSILON: Duration = Duration::from_millis(25);
    /// `startingHashKey` and `endingHashKey`: names and up to 39 digits each.
    const HASH_RANGE_BYTES: usize = 15 + 20 + 13 + 20;

    pub fn new(shards: usize, workers: usize, failover: Duration, our_item_bytes: usize) -> Self {
        let item_bytes = our_item_bytes + Self::HASH_RANGE_BYTES;
        let renew_every = (failover / 3).saturating_sub(Self::EPSILON).as_secs_f64();
        let renewals_per_hour = shards as f64 * 3600.0 / renew_every;
        let scan_every = ((failover + Self::EPSILON) * 2).as_secs_f64();
        let scans_per_hour = workers as f64 * 3600.0 / scan_every;
        let units_per_scan = (shards * item_bytes).div_ceil(4096) as f64 / 2.0;
        Self {
            item_bytes,
            renewals: Hourly {
                requests: renewals_per_hour,
                read_units: 0.0,
                write_units: renewals_per_hour * item_bytes.div_ceil(1024) as f64,
            },
            scans: Hourly {
                requests: scans_per_hour,
                read_units: scans_per_hour * units_per_scan,
                write_units: 0.0,
            },
        }
    }

    pub fn total(&self) -> Hourly {
        Hourly {
            requests: self.renewals.requests + self.scans.requests,
            read_units: self.scans.read_units,
            write_units: self.renewals.write_units,
        }
    }
}

/// Runs the measurement on a paused current-thread runtime.
pub fn measure(settings: &ScaleSettings) -> ScaleReport {
    let started = std::time::Instant::now();
    fastrand::seed(settings.seed);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build();
    let mut report = match runtime {
        Ok(runtime) => runtime.block_on(async { Fleet::new(settings.clone()).measure().await }),
        Err(error) => panic!("no runtime for the scale measurement: {error}"),
    };
    report.wall = started.elapsed();
    report
}

struct Member {
    worker: Worker,
    /// Asked to stop: it hands its shards on, and counts no more toward the balance.
    stopping: bool,
    stopper: Option<JoinHandle<()>>,
}

struct Fleet {
    settings: ScaleSettings,
    world: Arc<World>,
    table: Arc<Mutex<TableModel>>,
    observer: Arc<Observer>,
    faults: Arc<Faults>,
    shared: Shared,
    members: Vec<Member>,
    made: usize,
    /// Since when each shard without a reader has had none.
    unread_since: BTreeMap<String, Duration>,
}

impl Fleet {
    fn new(settings: ScaleSettings) -> Self {
        let world = Arc::new(World::new(settings.seed));
        let observer = Arc::new(Observer::default());
        let mut stream_settings = StreamSettings::new(Flavor::Kinesis, settings.shards, Duration::ZERO);
        stream_settings.record_gap = None;
        stream_settings.lifecycle_every = None;
        let stream = Arc::new(Mutex::new(StreamModel::new(world.clone(), stream_settings)));
        let table = Arc::new(Mutex::new(TableModel::new(settings.failover, observer.clone())));
        let faults = Arc::new(Faults::new(world.clone(), FaultRates::NONE));
        let shared = Shared {
            world: world.clone(),
            stream,
            table: table.clone(),
            observer: observer.clone(),
            failover: settings.failover,
        };
        Self {
            settings,
            world,
            table,
            observer,
            faults,
            shared,
            members: Vec::new(),
            made: 0,
            unread_since: BTreeMap::new(),
        }
    }

    fn start(&mut self, count: usize) {
        for _ in 0..count {
            self.made += 1;
            // As long as a real worker id (host name, process id, suffix).
            let id = format!(
                "ip-10-0-{:03}-{:03}.ec2.internal-{:05}",
                self.made / 256,
                self.made % 256,
                self.made
            );
            let mut config = ConsumerConfig::new("scale", &id).with_failover(self.settings.failover);
            config.idle_between_reads = self.settings.idle_between_reads;
            config.initial_position = InitialPosition::TrimHorizon;
            self.members.push(Member {
                worker: spawn_worker(&self.shared, &self.faults, config),
                stopping: false,
                stopper: None,
            });
        }
    }

    /// The `count` oldest running workers, killed (no release) or stopped gracefully.
    fn end(&mut self, count: usize, graceful: bool) {
        let running: Vec<usize> = (0..self.members.len()).filter(|&i| !self.members[i].stopping).collect();
        let chosen: Vec<usize> = if graceful {
            running.into_iter().take(count).collect()
        } else {
            // Killed ones are anywhere in the fleet, the leader included now and then.
            let mut running = running;
            let mut chosen = Vec::new();
            while chosen.len() < count && !running.is_empty() {
                chosen.push(running.swap_remove(self.world.below(running.len())));
            }
            chosen
        };
        for index in chosen {
            let member = &mut self.members[index];
            member.stopping = true;
            if graceful {
                member.worker.shutdown.cancel();
                if let Some(mut handle) = member.worker.handle.take() {
                    member.stopper = Some(tokio::spawn(async move {
                        if tokio::time::timeout(Duration::from_secs(25), &mut handle)
                            .await
                            .is_err()
                        {
                            handle.abort();
                        }
                    }));
                }
            } else {
                member.worker.abort.abort();
                member.worker.handle = None;
            }
        }
    }

    /// Workers that still run their consumer (a stopping one until it has handed on).
    fn alive(&self) -> BTreeSet<&str> {
        self.members
            .iter()
            .filter(|m| {
                let running = m.worker.handle.as_ref().is_some_and(|h| !h.is_finished());
                let handing_on = m.stopper.as_ref().is_some_and(|s| !s.is_finished());
                running || handing_on
            })
            .map(|m| m.worker.id.as_str())
            .collect()
    }

    /// Notes which shards have no reader now; true when the leases are balanced.
    fn observe(&mut self, phase: &mut Phase) -> bool {
        let now = self.world.now();
        let alive: BTreeSet<String> = self.alive().into_iter().map(str::to_string).collect();
        let counted: BTreeSet<&str> = self
            .members
            .iter()
            .filter(|m| !m.stopping)
            .map(|m| m.worker.id.as_str())
            .collect();
        let mut loads: BTreeMap<&str, usize> = counted.iter().map(|id| (*id, 0)).collect();
        let mut all_held = true;
        let mut leases = 0;
        let table = lock(&self.table);
        for (lease, _) in table.leases() {
            if lease.checkpoint.is_shard_end() {
                continue;
            }
            leases += 1;
            let owner = lease.owner.as_deref();
            if let Some(load) = owner.and_then(|o| loads.get_mut(o)) {
                *load += 1;
            } else {
                all_held = false;
            }
            let read = owner.is_some_and(|o| alive.contains(o));
            if read {
                if let Some(since) = self.unread_since.remove(&lease.key) {
                    phase.longest_unread = phase.longest_unread.max(now - since);
                }
            } else {
                let since = *self.unread_since.entry(lease.key.clone()).or_insert(now);
                phase.longest_unread = phase.longest_unread.max(now - since);
                phase.unread_shard_seconds += 1.0;
            }
        }
        let workers = loads.len().max(1);
        let (low, high) = (leases / workers, leases.div_ceil(workers));
        leases == self.settings.shards && all_held && loads.values().all(|&l| (low..=high).contains(&l))
    }

    /// Ticks every second until balanced (or the patience runs out); `event` runs first.
    async fn phase(&mut self, name: &'static str, event: impl FnOnce(&mut Self)) -> Phase {
        let mut phase = Phase {
            name,
            balanced_after: None,
            longest_unread: Duration::ZERO,
            unread_shard_seconds: 0.0,
        };
        let start = self.world.now();
        event(self);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let elapsed = self.world.now() - start;
            if self.observe(&mut phase) {
                phase.balanced_after = Some(elapsed);
                return phase;
            }
            if elapsed >= self.settings.patience {
                return phase;
            }
        }
    }

    /// A rolling deploy: a tenth more workers start, and once balanced, a tenth of the
    /// old ones stop gracefully; until every old one is replaced.
    async fn rolling_deploy(&mut self) -> Phase {
        let start = self.world.now();
        let old: usize = self.members.iter().filter(|m| !m.stopping).count();
        let batch = self.settings.tenth();
        let mut total = Phase {
            name: "rolling deploy (a tenth at a time, graceful)",
            balanced_after: Some(Duration::ZERO),
            longest_unread: Duration::ZERO,
            unread_shard_seconds: 0.0,
        };
        let mut replaced = 0;
        while replaced < old {
            let count = batch.min(old - replaced);
            let started = self.phase("new", |fleet| fleet.start(count)).await;
            let stopped = self.phase("old", |fleet| fleet.end(count, true)).await;
            replaced += count;
            for part in [started, stopped] {
                total.longest_unread = total.longest_unread.max(part.longest_unread);
                total.unread_shard_seconds += part.unread_shard_seconds;
                if part.balanced_after.is_none() {
                    total.balanced_after = None;
                }
            }
        }
        if total.balanced_after.is_some() {
            total.balanced_after = Some(self.world.now() - start);
        }
        total
    }

    async fn measure(mut self) -> ScaleReport {
        let workers = self.settings.workers;
        let tenth = self.settings.tenth();
        let mut phases = vec![self.phase("cold start", |fleet| fleet.start(workers)).await];
        // Steady: the first minutes after balance still settle; then one measured stretch.
        tokio::time::sleep(Duration::from_secs(300)).await;
        let before = lock(&self.table).usage();
        tokio::time::sleep(self.settings.steady).await;
        let usage = lock(&self.table).usage().since(&before);
        phases.push(
            self.phase("a tenth of the workers killed", |fleet| fleet.end(tenth, false))
                .await,
        );
        phases.push(
            self.phase("a tenth more workers started", |fleet| fleet.start(tenth))
                .await,
        );
        phases.push(self.rolling_deploy().await);
        self.end(self.members.len(), true);
        for member in &mut self.members {
            if let Some(stopper) = member.stopper.take() {
                let _ = stopper.await;
            }
        }
        let hours = self.settings.steady.as_secs_f64() / 3600.0;
        let steady = Request::ALL
            .iter()
            .map(|&request| {
                let units = usage.of(request);
                let hourly = Hourly {
                    requests: units.requests as f64 / hours,
                    read_units: units.read_units / hours,
                    write_units: units.write_units / hours,
                };
                (request, hourly)
            })
            .filter(|(_, hourly)| hourly.requests > 0.0)
            .collect();
        let item_bytes = lock(&self.table).leases().map(|(l, _)| item_size(l)).max().unwrap_or(0);
        ScaleReport {
            kcl: Kcl2Model::new(self.settings.shards, workers, self.settings.failover, item_bytes),
            settings: self.settings,
            phases,
            steady,
            violations: self.observer.violations(),
            wall: Duration::ZERO,
        }
    }
}

/// The report as Markdown tables.
pub fn markdown(reports: &[ScaleReport]) -> String {
    let mut out = String::new();
    out.push_str(
        "| shards × workers | phase | balanced after | longest a shard went unread | unread shard-seconds |\n",
    );
    out.push_str("|---|---|---|---|---|\n");
    for report in reports {
        let fleet = format!("{} × {}", report.settings.shards, report.settings.workers);
        for phase in &report.phases {
            let balanced = phase.balanced_after.map_or("not within the patience".to_string(), |d| {
                format!("{:.0} s", d.as_secs_f64())
            });
            out.push_str(&format!(
                "| {fleet} | {} | {balanced} | {:.0} s | {:.0} |\n",
                phase.name,
                phase.longest_unread.as_secs_f64(),
                phase.unread_shard_seconds
            ));
        }
    }
    out.push_str("\n| shards × workers | design | requests | reads/h (RRU) | writes/h (WRU) | $/month on demand |\n");
    out.push_str("|---|---|---|---|---|---|\n");
    for report in reports {
        let fleet = format!("{} × {}", report.settings.shards, report.settings.workers);
        let mut row = |design: &str, what: &str, hourly: &Hourly| {
            out.push_str(&format!(
                "| {fleet} | {design} | {what} | {:.0} | {:.0} | {:.2} |\n",
                hourly.read_units,
                hourly.write_units,
                hourly.dollars_per_month()
            ));
        };
        for (request, hourly) in &report.steady {
            row("ours", request.name(), hourly);
        }
        let ours = report.steady_total();
        row("**ours, total**", &format!("{:.0}/h", ours.requests), &ours);
        let kcl = &report.kcl;
        let failover = report.settings.failover;
        let renew_every = (failover / 3).saturating_sub(Kcl2Model::EPSILON).as_secs_f64();
        let scan_every = ((failover + Kcl2Model::EPSILON) * 2).as_secs_f64();
        row(
            "KCL 2.x",
            &format!("lease renewals (each lease every {renew_every:.2} s)"),
            &kcl.renewals,
        );
        row(
            "KCL 2.x",
            &format!("lease table scans (each worker every {scan_every:.2} s)"),
            &kcl.scans,
        );
        let total = kcl.total();
        row("**KCL 2.x, total**", &format!("{:.0}/h", total.requests), &total);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kcl_model_matches_its_hand_computed_figures() {
        // 1,000 leases renewed every 3.308 s: 1.088 M writes an hour.
        let model = Kcl2Model::new(1000, 50, Duration::from_secs(10), 282);
        assert_eq!(model.item_bytes, 350);
        assert!((model.renewals.write_units - 1_088_161.0).abs() < 100.0, "{model:?}");
        // 50 workers × 179.55 scans an hour × 350 KB / 4 KB / 2 (86 units, halved).
        assert!((model.scans.requests - 8977.6).abs() < 1.0, "{model:?}");
        assert!((model.scans.read_units - 8977.6 * 43.0).abs() < 100.0, "{model:?}");
        let dollars = model.total().dollars_per_month();
        assert!((dollars - (1_088_161.0 * 0.625 + 386_035.0 * 0.125) / 1e6 * 730.0).abs() < 1.0);
    }
}
