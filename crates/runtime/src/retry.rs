//! The one retry layer: [`retry`] runs a call again while its error is throttled or
//! transient, with exponential backoff and full jitter, under a named [`RetryPolicy`].
//!
//! Two layers retry an AWS call, on purpose. The SDK's standard strategy
//! (`AWS_MAX_ATTEMPTS`, 3 by default, a few hundred milliseconds in all, and a retry
//! quota that stops a whole client from hammering a failing service) absorbs blips
//! inside one call. A policy here waits out what outlasts that: a throttled shard for
//! minutes, a service restart. Nothing else retries: conditional failures, permanent
//! and fatal errors come straight back to the caller, who re-reads, quarantines or stops.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::error::{Classified, ErrorKind};

/// How one kind of call is retried. The numbers of each policy say why they are what they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// For logs.
    pub name: &'static str,
    /// The first delay's cap; each next one doubles, up to `max_delay`.
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// Stop retrying once this long has passed since the first attempt (`None`: retry
    /// until the call succeeds or the caller's stop token is cancelled).
    pub give_up_after: Option<Duration>,
}

impl RetryPolicy {
    /// Output a shard cannot skip (a batch file, a pointer, a PlayerState write, a level
    /// transaction): retried until it succeeds, the lease is lost or the process stops.
    /// 200 ms first, because one SDK attempt cycle already failed; 30 s at most, so a
    /// recovered service is used again within half a minute while an outage costs
    /// about two calls a minute per shard.
    pub const SHARD_OUTPUT: RetryPolicy = RetryPolicy {
        name: "shard_output",
        first_delay: Duration::from_millis(200),
        max_delay: Duration::from_secs(30),
        give_up_after: None,
    };

    /// A checkpoint write: short, because the lease it needs expires after the failover
    /// time (10 s by default); after 5 s the shard's next batch tries again.
    pub const CHECKPOINT: RetryPolicy = RetryPolicy {
        name: "checkpoint",
        first_delay: Duration::from_millis(50),
        max_delay: Duration::from_secs(1),
        give_up_after: Some(Duration::from_secs(5)),
    };

    /// A read the worker needs to go on (a lease table scan, a shard listing): its next
    /// timer tick tries again anyway, so a few seconds are enough.
    pub const CONTROL_READ: RetryPolicy = RetryPolicy {
        name: "control_read",
        first_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(2),
        give_up_after: Some(Duration::from_secs(8)),
    };

    /// Checks at start: a throttled account or a service still starting must not fail a
    /// deployment, but a minute of failures is a real problem worth an exit and a restart.
    pub const START: RetryPolicy = RetryPolicy {
        name: "start",
        first_delay: Duration::from_millis(250),
        max_delay: Duration::from_secs(8),
        give_up_after: Some(Duration::from_secs(60)),
    };

    /// Operator commands (`pipelinectl`): someone is waiting; half a minute, then say why.
    pub const COMMAND: RetryPolicy = RetryPolicy {
        name: "command",
        first_delay: Duration::from_millis(200),
        max_delay: Duration::from_secs(5),
        give_up_after: Some(Duration::from_secs(30)),
    };

    /// A copy of this policy that gives up after `limit` (a configured window).
    pub const fn giving_up_after(self, limit: Duration) -> RetryPolicy {
        RetryPolicy {
            give_up_after: Some(limit),
            ..self
        }
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(self.first_delay, self.max_delay)
    }
}

/// Why [`retry`] returned without a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetryError<E> {
    /// The call failed in a way retrying does not help, or the policy's time ran out.
    #[error("{error}")]
    Failed { error: E, attempts: u32 },
    /// The stop token was cancelled (lease lost, shutdown) while waiting to retry.
    #[error("stopped while retrying after: {last}")]
    Stopped { last: E, attempts: u32 },
}

impl<E> RetryError<E> {
    /// The last error, however the retries ended.
    pub fn into_error(self) -> E {
        match self {
            RetryError::Failed { error, .. } | RetryError::Stopped { last: error, .. } => error,
        }
    }

    pub fn error(&self) -> &E {
        match self {
            RetryError::Failed { error, .. } | RetryError::Stopped { last: error, .. } => error,
        }
    }

    pub fn is_stopped(&self) -> bool {
        matches!(self, RetryError::Stopped { .. })
    }
}

impl<E: Classified> Classified for RetryError<E> {
    fn kind(&self) -> ErrorKind {
        self.error().kind()
    }
}

/// Runs `call` until it succeeds, fails in a way retrying cannot fix, the policy gives
/// up, or `stop` is cancelled during a wait.
pub async fn retry<T, E, F, Fut>(
    policy: &RetryPolicy,
    stop: &CancellationToken,
    mut call: F,
) -> Result<T, RetryError<E>>
where
    E: Classified + std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let started = Instant::now();
    let mut backoff = policy.backoff();
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let error = match call().await {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        let kind = error.kind();
        if !kind.is_retryable() {
            return Err(RetryError::Failed { error, attempts });
        }
        let delay = backoff.next_delay();
        if policy
            .give_up_after
            .is_some_and(|limit| started.elapsed() + delay > limit)
        {
            tracing::warn!(policy = policy.name, attempts, %kind, %error, "giving up after retries");
            return Err(RetryError::Failed { error, attempts });
        }
        if attempts.is_multiple_of(10) {
            tracing::warn!(policy = policy.name, attempts, %kind, %error, "still retrying");
        } else {
            tracing::debug!(policy = policy.name, attempts, %kind, %error, "retrying");
        }
        tokio::select! {
            // Fixed order (not tokio's random one), so a simulation replays exactly.
            biased;
            () = stop.cancelled() => return Err(RetryError::Stopped { last: error, attempts }),
            () = tokio::time::sleep(delay) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn retries_only_what_may_pass_and_gives_up_on_time() {
        let stop = CancellationToken::new();
        let calls = Cell::new(0);
        let outcome: Result<u32, _> = retry(&RetryPolicy::CHECKPOINT, &stop, || async {
            calls.set(calls.get() + 1);
            if calls.get() < 4 {
                Err(ErrorKind::Throttled)
            } else {
                Ok(7)
            }
        })
        .await;
        assert_eq!(outcome, Ok(7));
        assert_eq!(calls.get(), 4);

        for kind in [ErrorKind::ConditionFailed, ErrorKind::Permanent, ErrorKind::Fatal] {
            let calls = Cell::new(0);
            let outcome: Result<(), _> = retry(&RetryPolicy::SHARD_OUTPUT, &stop, || async {
                calls.set(calls.get() + 1);
                Err(kind)
            })
            .await;
            assert_eq!(
                outcome,
                Err(RetryError::Failed {
                    error: kind,
                    attempts: 1
                })
            );
        }

        let started = Instant::now();
        let outcome: Result<(), _> =
            retry(&RetryPolicy::CHECKPOINT, &stop, || async { Err(ErrorKind::Transient) }).await;
        assert!(matches!(outcome, Err(RetryError::Failed { attempts, .. }) if attempts > 3));
        assert!(started.elapsed() <= Duration::from_secs(5), "{:?}", started.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn an_unbounded_policy_stops_when_told() {
        let stop = CancellationToken::new();
        let cancel = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            cancel.cancel();
        });
        let started = Instant::now();
        let outcome: Result<(), _> = retry(&RetryPolicy::SHARD_OUTPUT, &stop, || async {
            Err(ErrorKind::Throttled)
        })
        .await;
        assert!(matches!(outcome, Err(RetryError::Stopped { last: ErrorKind::Throttled, attempts }) if attempts > 100));
        assert!(started.elapsed() >= Duration::from_secs(3600));
    }
}
