//! Exponential backoff with full jitter, for throttling and transient failures.

use std::time::Duration;

/// Delays that double from `base` up to `max`, each drawn uniformly below its cap so
/// that many workers throttled together do not retry together.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Self { base, max, attempt: 0 }
    }

    /// The delay before the next retry.
    pub fn next_delay(&mut self) -> Duration {
        let cap = self.cap();
        self.attempt = self.attempt.saturating_add(1);
        let millis = cap.as_millis().max(1) as u64;
        Duration::from_millis(fastrand::u64(millis / 2..=millis))
    }

    /// The upper bound of the next delay.
    pub fn cap(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(20)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_and_reset() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let mut caps = Vec::new();
        for _ in 0..8 {
            caps.push(backoff.cap());
            let delay = backoff.next_delay();
            assert!(delay <= *caps.last().expect("cap"));
        }
        assert_eq!(caps[0], Duration::from_millis(100));
        assert_eq!(caps[3], Duration::from_millis(800));
        assert_eq!(caps[7], Duration::from_secs(2));
        backoff.reset();
        assert_eq!(backoff.cap(), Duration::from_millis(100));
    }
}
