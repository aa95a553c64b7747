//! What a run reports, and the table the test prints.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use pipeline_runtime::metrics::names;
use serde_json::Value;

use crate::faults::FaultCounts;
use crate::lease_table::Usage;
use crate::observer::{Deliveries, INVARIANTS};
use crate::scenario::Scenario;
use crate::stream::StreamCounts;

/// What was done to the fleet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerEvents {
    pub kills: u64,
    pub graceful_stops: u64,
    pub stalls: u64,
    pub restarts: u64,
    pub outages: u64,
}

impl WorkerEvents {
    pub fn add(&mut self, other: &WorkerEvents) {
        self.kills += other.kills;
        self.graceful_stops += other.graceful_stops;
        self.stalls += other.stalls;
        self.restarts += other.restarts;
        self.outages += other.outages;
    }
}

/// The consumer's own counters the report shows.
pub const COUNTERS: [&str; 8] = [
    names::LEASES_TAKEN,
    names::LEASES_STOLEN,
    names::LEASES_LOST,
    names::LEASES_EXPIRED,
    names::SHARDS_ENDED,
    names::TRIMMED_READS,
    names::SHARDS_VANISHED,
    names::THROTTLES,
];

/// Adds the counters of [`COUNTERS`] found in EMF documents to `into`.
pub fn sum_counters(documents: &[Value], into: &mut BTreeMap<String, f64>) {
    for document in documents {
        for name in COUNTERS {
            if let Some(value) = document.get(name).and_then(Value::as_f64) {
                *into.entry(name.to_string()).or_default() += value;
            }
        }
    }
}

/// One run's outcome.
#[derive(Debug, Clone)]
pub struct Report {
    pub scenario: Scenario,
    pub simulated: Duration,
    /// How long the consumer took to catch up once the chaos stopped.
    pub caught_up: Duration,
    pub stream: StreamCounts,
    pub deliveries: Deliveries,
    /// Records trimmed before anyone read them (only an outage may cause it).
    pub lost_to_trim: u64,
    pub faults: FaultCounts,
    pub events: WorkerEvents,
    pub counters: BTreeMap<String, f64>,
    pub usage: Usage,
    pub violations: Vec<(Duration, String)>,
    /// FNV-1a over every hand-over: equal for two runs of one seed.
    pub digest: u64,
    pub wall: Duration,
}

impl Report {
    /// A run that could not even start.
    pub fn failed(scenario: Scenario, why: String) -> Self {
        Self {
            scenario,
            simulated: Duration::ZERO,
            caught_up: Duration::ZERO,
            stream: StreamCounts::default(),
            deliveries: Deliveries::default(),
            lost_to_trim: 0,
            faults: FaultCounts::default(),
            events: WorkerEvents::default(),
            counters: BTreeMap::new(),
            usage: Usage::default(),
            violations: vec![(Duration::ZERO, why)],
            digest: 0,
            wall: Duration::ZERO,
        }
    }

    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    fn counter(&self, name: &str) -> u64 {
        self.counters.get(name).copied().unwrap_or(0.0) as u64
    }

    /// What went wrong, with the command that replays it.
    pub fn failure(&self) -> String {
        let mut text = format!(
            "seed {} ({}, {} shards, {} workers): {} violations; replay with\n  {}\n",
            self.scenario.seed,
            self.scenario.flavor.name(),
            self.scenario.shards,
            self.scenario.workers,
            self.violations.len(),
            self.scenario.replay_command()
        );
        for (at, what) in self.violations.iter().take(10) {
            let _ = writeln!(text, "  at {}: {what}", clock(*at));
        }
        text
    }
}

/// `d`h`mm`m`ss`s.
pub fn clock(at: Duration) -> String {
    let s = at.as_secs();
    format!("{}h{:02}m{:02}s", s / 3600, s / 60 % 60, s % 60)
}

/// The table printed at the end of a simulation test: one row per seed, then totals.
pub fn table(reports: &[Report]) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "{:>6} {:<16} {:>5} {:>3} {:>3} {:>7} {:>9} {:>8} {:>6} {:>6} {:>5} {:>5} {:>5} {:>6} {:>6} {:>8} {:>6}",
        "seed",
        "stream",
        "days",
        "shd",
        "wkr",
        "shards",
        "records",
        "again",
        "faults",
        "kills",
        "stops",
        "stall",
        "trim",
        "taken",
        "stolen",
        "catch-up",
        "viol."
    );
    let mut total_records = 0;
    let mut total_days = 0.0;
    let mut faults = FaultCounts::default();
    let mut events = WorkerEvents::default();
    let mut checks = 0;
    let mut violations = 0;
    for report in reports {
        let _ = writeln!(
            text,
            "{:>6} {:<16} {:>5.1} {:>3} {:>3} {:>7} {:>9} {:>8} {:>6} {:>6} {:>5} {:>5} {:>5} {:>6} {:>6} {:>8} {:>6}",
            report.scenario.seed,
            report.scenario.flavor.name(),
            report.scenario.days,
            report.scenario.shards,
            report.scenario.workers,
            report.stream.shards,
            report.stream.user_records,
            report.deliveries.redelivered,
            report.faults.total(),
            report.events.kills,
            report.events.graceful_stops,
            report.events.stalls,
            report.lost_to_trim,
            report.counter(names::LEASES_TAKEN),
            report.counter(names::LEASES_STOLEN),
            clock(report.caught_up),
            report.violations.len()
        );
        total_records += report.stream.user_records;
        total_days += report.simulated.as_secs_f64() / 86_400.0;
        faults.add(&report.faults);
        events.add(&report.events);
        checks += report.deliveries.checks;
        violations += report.violations.len();
    }
    let wall: Duration = reports.iter().map(|r| r.wall).sum();
    let _ = writeln!(
        text,
        "\n{} seeds, {:.1} simulated days, {} records, {} invariant checks, {} violations ({:.1} s of CPU)",
        reports.len(),
        total_days,
        total_records,
        checks,
        violations,
        wall.as_secs_f64()
    );
    let _ = writeln!(
        text,
        "faults: {} throttles, {} errors, {} applied writes answered with an error, {} latency spikes, {} slow checkpoints",
        faults.throttles, faults.errors_before, faults.lost_answers, faults.latency_spikes, faults.slow_checkpoints
    );
    let _ = writeln!(
        text,
        "workers: {} killed, {} stopped gracefully, {} stalled past the failover time, {} restarted, {} fleet outages",
        events.kills, events.graceful_stops, events.stalls, events.restarts, events.outages
    );
    let _ = writeln!(
        text,
        "invariants ({}):",
        if violations == 0 { "all held" } else { "VIOLATED" }
    );
    for invariant in INVARIANTS {
        let _ = writeln!(text, "  - {invariant}");
    }
    text
}
