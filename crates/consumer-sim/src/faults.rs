//! Faults of the services a worker calls, and stalls of the worker itself.
//!
//! Every call of a worker to the stream or the lease table passes its [`Gate`] (closed
//! while the worker is stalled, as in a long GC pause: nothing it sends or receives
//! moves) and is given a fate by [`Faults::plan`]: latency (now and then a spike), a
//! throttle or a server error before it reaches the service, or, for a write, an
//! answer lost after the write was applied (the SDK's retry then meets its own write's
//! condition, or gives up).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pipeline_runtime::error::ErrorKind;
use tokio::time::Instant;

use crate::world::{World, lock};

/// How often each fault strikes a call (probabilities per call).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultRates {
    /// Throttled before anything happened.
    pub throttle: f64,
    /// A server error before anything happened.
    pub error_before: f64,
    /// A write applied whose answer is lost: the caller sees an error.
    pub lost_answer: f64,
    /// A call that takes seconds instead of milliseconds.
    pub latency_spike: f64,
    /// A checkpoint write that takes seconds.
    pub slow_checkpoint: f64,
}

impl FaultRates {
    pub const NONE: FaultRates = FaultRates {
        throttle: 0.0,
        error_before: 0.0,
        lost_answer: 0.0,
        latency_spike: 0.0,
        slow_checkpoint: 0.0,
    };

    /// Rates for a run: `level` 1.0 is a bad day on real AWS, far worse than a normal one.
    pub fn at_level(level: f64) -> FaultRates {
        FaultRates {
            throttle: 0.02 * level,
            error_before: 0.01 * level,
            lost_answer: 0.01 * level,
            latency_spike: 0.005 * level,
            slow_checkpoint: 0.02 * level,
        }
    }
}

/// What kind of call a fate is drawn for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Read,
    Write,
    Checkpoint,
}

/// The faults injected so far, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounts {
    pub throttles: u64,
    pub errors_before: u64,
    pub lost_answers: u64,
    pub latency_spikes: u64,
    pub slow_checkpoints: u64,
}

impl FaultCounts {
    pub fn total(&self) -> u64 {
        self.throttles + self.errors_before + self.lost_answers + self.latency_spikes + self.slow_checkpoints
    }

    pub fn add(&mut self, other: &FaultCounts) {
        self.throttles += other.throttles;
        self.errors_before += other.errors_before;
        self.lost_answers += other.lost_answers;
        self.latency_spikes += other.latency_spikes;
        self.slow_checkpoints += other.slow_checkpoints;
    }
}

/// One call's fate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fate {
    /// Time until the call reaches the service.
    pub request: Duration,
    /// Time until its answer is back.
    pub response: Duration,
    /// It fails before reaching the service.
    pub fail_before: Option<ErrorKind>,
    /// It is carried out, and the caller gets this error instead of the answer.
    pub lose_answer: Option<ErrorKind>,
}

/// The fault source of one run (shared by every worker's clients).
#[derive(Debug)]
pub struct Faults {
    world: Arc<World>,
    rates: Mutex<FaultRates>,
    counts: Mutex<FaultCounts>,
}

impl Faults {
    pub fn new(world: Arc<World>, rates: FaultRates) -> Self {
        Self {
            world,
            rates: Mutex::new(rates),
            counts: Mutex::new(FaultCounts::default()),
        }
    }

    /// Changes the rates (the run calms down before its final checks).
    pub fn set_rates(&self, rates: FaultRates) {
        *lock(&self.rates) = rates;
    }

    pub fn counts(&self) -> FaultCounts {
        *lock(&self.counts)
    }

    /// Passes `gate`, then draws the fate of one call.
    pub async fn plan(&self, gate: &Gate, call: Call) -> Fate {
        gate.pass().await;
        let rates = *lock(&self.rates);
        let world = &self.world;
        let mut counts = FaultCounts::default();
        let mut total = world.between(Duration::from_millis(2), Duration::from_millis(12));
        if world.chance(rates.latency_spike) {
            counts.latency_spikes += 1;
            total = world.between(Duration::from_millis(800), Duration::from_secs(3));
        }
        if call == Call::Checkpoint && world.chance(rates.slow_checkpoint) {
            counts.slow_checkpoints += 1;
            total = world.between(Duration::from_secs(2), Duration::from_secs(8));
        }
        let mut fate = Fate {
            request: total / 2,
            response: total - total / 2,
            fail_before: None,
            lose_answer: None,
        };
        if world.chance(rates.throttle) {
            counts.throttles += 1;
            fate.fail_before = Some(ErrorKind::Throttled);
        } else if world.chance(rates.error_before) {
            counts.errors_before += 1;
            fate.fail_before = Some(ErrorKind::Transient);
        } else if call != Call::Read && world.chance(rates.lost_answer) {
            counts.lost_answers += 1;
            // The SDK retried the applied write and met its own condition, or gave up.
            fate.lose_answer = Some(if world.chance(0.5) {
                ErrorKind::ConditionFailed
            } else {
                ErrorKind::Transient
            });
        }
        lock(&self.counts).add(&counts);
        fate
    }
}

/// A worker's stall switch: while closed, none of its calls starts or finishes.
#[derive(Debug, Clone, Default)]
pub struct Gate(Arc<Mutex<Option<Instant>>>);

impl Gate {
    /// Stalls the worker until `until`.
    pub fn close_until(&self, until: Instant) {
        *lock(&self.0) = Some(until);
    }

    pub fn is_closed(&self) -> bool {
        lock(&self.0).is_some_and(|until| Instant::now() < until)
    }

    /// Waits while the gate is closed.
    pub async fn pass(&self) {
        loop {
            let until = *lock(&self.0);
            match until {
                Some(until) if Instant::now() < until => tokio::time::sleep_until(until).await,
                _ => return,
            }
        }
    }
}
