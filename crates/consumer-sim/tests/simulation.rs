//! The shard consumer over days of stream life, in deterministic simulation: streams
//! that roll over, split, merge and trim; a lease table that throttles, stalls and
//! loses answers to applied writes; workers killed, restarted, stalled past the
//! failover time and stopped gracefully. Every run is decided by its seed.
//!
//! By default 12 seeds run, and the seeds that once found a bug. `SIM_SEEDS=n` runs n
//! seeds (from `SIM_FIRST_SEED`, default 1), `SIM_DAYS=d` makes each
//! run d simulated days long, `SIM_SEED=s` replays one seed (a failure prints the command),
//! `SIM_LOG=debug` (or any `LOG_LEVEL`-style list) prints its story in simulated time.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use consumer_sim::report::table;
use consumer_sim::{Report, Scenario, run};

/// Seeds that once found a bug, run with the default ones: each broke an invariant on
/// the code before its fix.
/// - 17: a worker back from a stall took a free lease; another, judging it by a
///   worker-table read made before that, still saw it dead and took the lease from it.
/// - 157: a lease handed to a worker during its stall was read by it once it woke with
///   nothing written, so others could still take it from a worker reading it (a
///   hand-over is now confirmed by the receiver's own conditional write).
const SEEDS_THAT_FOUND_BUGS: [u64; 2] = [17, 157];

fn env<T: std::str::FromStr>(name: &str) -> Option<T> {
    let value = std::env::var(name).ok()?;
    match value.parse() {
        Ok(parsed) => Some(parsed),
        Err(_) => panic!("{name}={value:?} is not a valid number"),
    }
}

/// Runs the seeds on every core, each on its own paused current-thread runtime.
fn run_all(scenarios: Vec<Scenario>) -> Vec<Report> {
    let next = AtomicUsize::new(0);
    let reports = Mutex::new(Vec::new());
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(scenarios.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(scenario) = scenarios.get(i) else {
                        return;
                    };
                    let report = run(scenario);
                    reports.lock().unwrap_or_else(|e| e.into_inner()).push(report);
                }
            });
        }
    });
    let mut reports = reports.into_inner().unwrap_or_else(|e| e.into_inner());
    reports.sort_by_key(|r| r.scenario.seed);
    reports
}

#[test]
fn the_consumer_keeps_its_invariants_in_simulation() {
    consumer_sim::log::install_from_env();
    let days: f64 = env("SIM_DAYS").unwrap_or(2.0);
    let seeds: Vec<u64> = match env::<u64>("SIM_SEED") {
        Some(seed) => vec![seed],
        None => {
            let first: u64 = env("SIM_FIRST_SEED").unwrap_or(1);
            match env::<u64>("SIM_SEEDS") {
                Some(count) => (first..first + count).collect(),
                None => (first..first + 12).chain(SEEDS_THAT_FOUND_BUGS).collect(),
            }
        }
    };
    let reports = run_all(seeds.iter().map(|&seed| Scenario::from_seed(seed, days)).collect());
    println!("{}", table(&reports));
    let failures: Vec<String> = reports.iter().filter(|r| !r.passed()).map(Report::failure).collect();
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    for report in &reports {
        assert!(
            report.deliveries.records > 0,
            "seed {} handed nothing over",
            report.scenario.seed
        );
    }
}

#[test]
fn a_simulation_replays_exactly() {
    let scenario = Scenario::from_seed(3, 0.25);
    let first = run(&scenario);
    let second = run(&scenario);
    assert!(first.deliveries.records > 0 && first.faults.total() > 0);
    assert_eq!(first.digest, second.digest, "the same seed played out differently");
    assert_eq!(first.deliveries, second.deliveries);
    assert_eq!(first.counters, second.counters);
    assert_eq!(first.violations, second.violations);
    let other = run(&Scenario::from_seed(5, 0.25));
    assert_ne!(first.digest, other.digest, "another seed played out the same");
}
