//! A store's answer, or why it is down: every call bounded in time, and a recent answer
//! shared by the requests that come soon after it, so many open pages cost the stores
//! no more than one.

use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, Instant};

use pipeline_runtime::clock::now_ms;
use serde::Serialize;

/// What one read of a store gave.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reading<T> {
    /// `up` or `down`.
    pub status: &'static str,
    /// Why it is down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the store was read, ms since the epoch.
    pub at_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<T>,
}

impl<T> Reading<T> {
    pub fn up(data: T) -> Self {
        Self {
            status: "up",
            error: None,
            at_ms: now_ms(),
            data: Some(data),
        }
    }

    pub fn down(error: impl Into<String>) -> Self {
        Self {
            status: "down",
            error: Some(error.into()),
            at_ms: now_ms(),
            data: None,
        }
    }

    pub fn is_up(&self) -> bool {
        self.data.is_some()
    }
}

/// Runs `read` for at most `timeout`; its value, or its error or the timeout as a down
/// reading.
pub async fn read<T, E: Display>(timeout: Duration, read: impl Future<Output = Result<T, E>>) -> Reading<T> {
    match tokio::time::timeout(timeout, read).await {
        Ok(Ok(data)) => Reading::up(data),
        Ok(Err(error)) => Reading::down(error.to_string()),
        Err(_) => Reading::down(format!("no answer within {} ms", timeout.as_millis())),
    }
}

/// One read at a time of a store whose query runs on past the caller's timeout (a
/// dropped future does not cancel a warehouse statement; its statement timeout does,
/// a moment later): the read runs in
/// a task of its own, a caller waits for it at most `timeout`, and while it runs no
/// other starts, so a slow warehouse never gets a queue of the page's queries.
pub struct Single<T> {
    running: tokio::sync::Mutex<Option<Running<T>>>,
}

/// A read's task and when it started.
type Running<T> = (Instant, tokio::task::JoinHandle<Result<T, String>>);

impl<T> Default for Single<T> {
    fn default() -> Self {
        Self {
            running: tokio::sync::Mutex::new(None),
        }
    }
}

impl<T: Send + 'static> Single<T> {
    /// The running read's answer, or a new read's (`start`), within `timeout`.
    pub async fn read<F>(&self, timeout: Duration, start: impl FnOnce() -> F) -> Reading<T>
    where
        F: Future<Output = Result<T, String>> + Send + 'static,
    {
        let mut running = self.running.lock().await;
        // A read that ended after every caller gave up may be hours old: read again.
        if running
            .as_ref()
            .is_some_and(|(started, task)| task.is_finished() && started.elapsed() > timeout)
        {
            *running = None;
        }
        let (started, task) = running.get_or_insert_with(|| (Instant::now(), tokio::spawn(start())));
        let started = *started;
        let reading = match tokio::time::timeout(timeout, task).await {
            Ok(Ok(Ok(data))) => Reading::up(data),
            Ok(Ok(Err(error))) => Reading::down(error),
            Ok(Err(error)) => Reading::down(format!("the read stopped: {error}")),
            Err(_) => {
                return Reading::down(format!(
                    "no answer within {} ms (the query started {} s ago still runs; no other starts until it ends)",
                    timeout.as_millis(),
                    started.elapsed().as_secs()
                ));
            }
        };
        *running = None;
        reading
    }
}

/// The last reading of one store, reused while younger than `max_age`.
pub struct Cached<T> {
    store: &'static str,
    max_age: Duration,
    last: tokio::sync::Mutex<Option<(Instant, Reading<T>)>>,
}

impl<T: Clone> Cached<T> {
    pub fn new(store: &'static str, max_age: Duration) -> Self {
        Self {
            store,
            max_age,
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// The last reading if recent, else a new one from `read`. Requests meanwhile wait
    /// for it (the lock is held across the read, which is bounded in time) rather
    /// than read the store again. A store going down or coming back is logged once.
    pub async fn get<F: Future<Output = Reading<T>>>(&self, read: impl FnOnce() -> F) -> Reading<T> {
        let mut last = self.last.lock().await;
        if let Some((at, reading)) = last.as_ref()
            && at.elapsed() < self.max_age
        {
            return reading.clone();
        }
        let reading = read().await;
        let was_up = last.as_ref().is_none_or(|(_, r)| r.is_up());
        match (&reading.error, was_up) {
            (Some(error), true) => tracing::warn!(store = self.store, %error, "store down"),
            (None, false) => tracing::info!(store = self.store, "store up again"),
            _ => {}
        }
        *last = Some((Instant::now(), reading.clone()));
        reading
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_error_or_a_silence_is_a_down_store_with_its_reason() {
        let up = read(Duration::from_secs(1), async { Ok::<_, String>(3) }).await;
        assert_eq!((up.status, up.data), ("up", Some(3)));
        let failed = read(Duration::from_secs(1), async { Err::<u8, _>("connection refused") }).await;
        assert_eq!(failed.status, "down");
        assert_eq!(failed.error.as_deref(), Some("connection refused"));
        let silent = read(Duration::from_millis(20), async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<u8, String>(1)
        })
        .await;
        assert_eq!(silent.error.as_deref(), Some("no answer within 20 ms"));
    }

    #[tokio::test]
    async fn a_slow_read_runs_on_and_no_second_one_starts_meanwhile() {
        let single = Single::default();
        let starts = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let slow = |starts: std::sync::Arc<std::sync::atomic::AtomicU32>| {
            move || async move {
                starts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(150)).await;
                Ok::<_, String>(7)
            }
        };
        let first = single.read(Duration::from_millis(20), slow(starts.clone())).await;
        assert!(
            first
                .error
                .as_deref()
                .is_some_and(|e| e.starts_with("no answer within 20 ms")),
            "{first:?}"
        );
        let second = single.read(Duration::from_millis(20), slow(starts.clone())).await;
        assert_eq!(second.status, "down");
        // The first read, still running, answers the third call: one start in all.
        let third = single.read(Duration::from_secs(1), slow(starts.clone())).await;
        assert_eq!(third.data, Some(7));
        assert_eq!(starts.load(std::sync::atomic::Ordering::SeqCst), 1);
        // Once it ended, the next call starts a new read.
        let fourth = single.read(Duration::from_secs(1), slow(starts.clone())).await;
        assert_eq!(
            (fourth.data, starts.load(std::sync::atomic::Ordering::SeqCst)),
            (Some(7), 2)
        );
        // A read that ended after its callers gave up is not handed out later as new.
        let stale = Single::default();
        let stale_starts = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let gave_up = stale.read(Duration::from_millis(20), slow(stale_starts.clone())).await;
        assert_eq!(gave_up.status, "down");
        tokio::time::sleep(Duration::from_millis(250)).await;
        let again = stale.read(Duration::from_millis(100), slow(stale_starts.clone())).await;
        assert_eq!(
            (again.status, stale_starts.load(std::sync::atomic::Ordering::SeqCst)),
            ("down", 2),
            "a new read started"
        );
        let failed = Single::<u8>::default()
            .read(Duration::from_secs(1), || async { Err("refused".to_string()) })
            .await;
        assert_eq!(failed.error.as_deref(), Some("refused"));
    }

    #[tokio::test]
    async fn a_recent_reading_is_reused_and_an_old_one_read_again() {
        let cached = Cached::new("test", Duration::from_millis(200));
        let first = cached.get(|| async { Reading::up(1) }).await;
        let reused = cached.get(|| async { Reading::up(2) }).await;
        assert_eq!((first.data, reused.data), (Some(1), Some(1)));
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(cached.get(|| async { Reading::up(3) }).await.data, Some(3));
    }
}
