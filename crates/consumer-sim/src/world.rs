//! What every part of one run shares: the clock's origin and the one seeded generator.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// The origin of simulated time and the run's random choices.
#[derive(Debug)]
pub struct World {
    start: Instant,
    rng: Mutex<fastrand::Rng>,
}

/// Locks a mutex; a panic elsewhere (a failed invariant) must not hide behind a poison.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl World {
    /// A world whose clock starts now (call inside the paused runtime).
    pub fn new(seed: u64) -> Self {
        Self {
            start: Instant::now(),
            rng: Mutex::new(fastrand::Rng::with_seed(seed)),
        }
    }

    /// Simulated time since the run started.
    pub fn now(&self) -> Duration {
        Instant::now().saturating_duration_since(self.start)
    }

    /// The instant `at` after the start.
    pub fn instant(&self, at: Duration) -> Instant {
        self.start + at
    }

    /// True with probability `p`.
    pub fn chance(&self, p: f64) -> bool {
        p > 0.0 && lock(&self.rng).f64() < p
    }

    /// A uniform draw in `0..n` (`n` > 0).
    pub fn below(&self, n: usize) -> usize {
        lock(&self.rng).usize(..n.max(1))
    }

    /// A uniform duration between `low` and `high`.
    pub fn between(&self, low: Duration, high: Duration) -> Duration {
        if high <= low {
            return low;
        }
        let span = (high - low).as_millis() as u64;
        low + Duration::from_millis(lock(&self.rng).u64(..=span))
    }

    /// An exponentially distributed gap of mean `mean` (a Poisson process's), at least 1 ms.
    pub fn exponential(&self, mean: Duration) -> Duration {
        let u = lock(&self.rng).f64();
        let gap = -(1.0 - u).ln() * mean.as_secs_f64();
        Duration::from_secs_f64(gap.min(mean.as_secs_f64() * 20.0)).max(Duration::from_millis(1))
    }

    /// A fresh seed for a part that wants its own generator.
    pub fn fork_seed(&self) -> u64 {
        lock(&self.rng).u64(..)
    }
}
