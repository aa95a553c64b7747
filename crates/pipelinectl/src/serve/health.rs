//! `/api/health`: what lands, from the same reads as `summary`: the lake's recent
//! hour folders and their rejects by reason, the warehouse's rows and the age of its
//! last load, and the rate at which events land (rows loaded plus records rejected).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use pipeline_runtime::clock::now_ms;
use serde::Serialize;

use super::Page;
use super::store::{self, Cached, Reading, Single};
use crate::summary::{self, Lake, LakeScope, RejectCounts, Totals};

/// The page asks every 5 s; the warehouse's totals are one cheap query.
const WAREHOUSE_MAX_AGE: Duration = Duration::from_secs(2);
/// Batch files land a minute or so apart: listing the hour folders more often than
/// this shows nothing new and costs LISTs.
const LAKE_MAX_AGE: Duration = Duration::from_secs(10);
/// Error files read per lake read at most (a backlog is read over the next reads), so
/// one read stays within the store timeout.
const ERROR_FILES_PER_READ: usize = 25;
/// Rates are measured over the last 5 minutes of readings: loads come every few
/// seconds to a minute apart, and a shorter window reads 0 then a spike.
pub const RATE_WINDOW_MS: i64 = 300_000;
/// No rate before the readings span this long: a few seconds would show one load as
/// a spike.
const RATE_MIN_SPAN_MS: i64 = 60_000;

/// The health panel's recent readings, the rejects counted so far (each error file is
/// read once), the warehouse query running, and the samples rates are measured from.
pub struct HealthState {
    lake: Cached<Lake>,
    warehouse: Cached<Totals>,
    totals_query: Single<Totals>,
    rejects: tokio::sync::Mutex<RejectCounts>,
    rates: Mutex<Rates>,
}

#[derive(Default)]
struct Rates {
    loaded: Rate,
    rejected: Rate,
    /// The lake window the rejected samples are from: a new window starts the measure
    /// again.
    rejected_since_ms: Option<i64>,
}

impl Default for HealthState {
    fn default() -> Self {
        Self {
            lake: Cached::new("lake", LAKE_MAX_AGE),
            warehouse: Cached::new("warehouse", WAREHOUSE_MAX_AGE),
            totals_query: Single::default(),
            rejects: tokio::sync::Mutex::new(RejectCounts::default()),
            rates: Mutex::new(Rates::default()),
        }
    }
}

/// Growth per second of one counter, and over how long it was measured.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PerSecond {
    pub per_second: f64,
    pub over_ms: i64,
}

/// Events landed: rows loaded into the warehouse plus records rejected into the lake's
/// `errors/`, per second over the last [`RATE_WINDOW_MS`]. It follows the loads, so it
/// lags what the game sends by the batching and load intervals.
#[derive(Debug, Serialize)]
pub struct Landed {
    pub window_ms: i64,
    /// `None` until the readings span a minute.
    pub loaded: Option<PerSecond>,
    /// `None` until the readings of one lake window (with every error file read) span
    /// a minute.
    pub rejected: Option<PerSecond>,
}

/// The health panel.
#[derive(Debug, Serialize)]
pub struct Health {
    pub lake: Reading<Lake>,
    pub warehouse: Reading<Totals>,
    pub landed: Landed,
    /// Time since the warehouse's last load, by this server's clock.
    pub last_load_age_ms: Option<i64>,
}

pub async fn health(State(page): State<Arc<Page>>) -> Json<Health> {
    let timeout = page.store_timeout();
    let lake = page.health.lake.get(|| {
        store::read(timeout, async {
            let mut rejects = page.health.rejects.lock().await;
            let scope = LakeScope::recent_hours(now_ms(), ERROR_FILES_PER_READ);
            summary::read_lake(&page.s3, &page.args.stores.bucket, &scope, &mut rejects)
                .await
                .map_err(|e| format!("{e:#}"))
        })
    });
    let warehouse = page.health.warehouse.get(|| async {
        match &page.warehouse {
            Ok(_) => {
                let page = page.clone();
                page.health
                    .totals_query
                    .read(timeout, || {
                        let page = page.clone();
                        async move {
                            let Ok(warehouse) = &page.warehouse else {
                                return Err("the warehouse is not configured".to_string());
                            };
                            summary::read_totals(warehouse).await.map_err(|e| format!("{e:#}"))
                        }
                    })
                    .await
            }
            Err(reason) => Reading::down(reason.clone()),
        }
    });
    let (lake, warehouse) = tokio::join!(lake, warehouse);
    let landed = {
        // A poisoned lock only means a panic elsewhere mid-update; the samples stay usable.
        let mut rates = page.health.rates.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(totals) = &warehouse.data {
            rates
                .loaded
                .add(warehouse.at_ms, u64::try_from(totals.rows_loaded).unwrap_or(0));
        }
        // Only a count over every listed error file: one with files still unread grows
        // as they are read, not as records land.
        if let Some(data) = lake.data.as_ref().filter(|d| d.errors_files_unread == 0) {
            if rates.rejected_since_ms != data.since_ms {
                rates.rejected = Rate::default();
                rates.rejected_since_ms = data.since_ms;
            }
            rates.rejected.add(lake.at_ms, data.rejected.values().sum());
        }
        Landed {
            window_ms: RATE_WINDOW_MS,
            loaded: rates.loaded.per_second(),
            rejected: rates.rejected.per_second(),
        }
    };
    let last_load_age_ms = warehouse
        .data
        .and_then(|t| t.last_load_ms)
        .map(|at| (now_ms() - at).max(0));
    Json(Health {
        lake,
        warehouse,
        landed,
        last_load_age_ms,
    })
}

/// A counter's samples over the last [`RATE_WINDOW_MS`], for its growth per second.
#[derive(Debug, Default)]
pub struct Rate {
    samples: VecDeque<(i64, u64)>,
}

impl Rate {
    /// Adds the counter's value read at `at_ms`. A reading seen before (reused from the
    /// cache) adds nothing; a counter that went down (a warehouse truncated, another
    /// bucket) starts the measure again.
    pub fn add(&mut self, at_ms: i64, total: u64) {
        if let Some(&(last_at, last_total)) = self.samples.back() {
            if at_ms <= last_at {
                return;
            }
            if total < last_total {
                self.samples.clear();
            }
        }
        self.samples.push_back((at_ms, total));
        while self.samples.front().is_some_and(|&(at, _)| at < at_ms - RATE_WINDOW_MS) {
            self.samples.pop_front();
        }
    }

    /// Growth per second between the oldest and newest samples, once they are at
    /// least [`RATE_MIN_SPAN_MS`] apart.
    pub fn per_second(&self) -> Option<PerSecond> {
        let (&(first_at, first), &(last_at, last)) = (self.samples.front()?, self.samples.back()?);
        let over_ms = last_at - first_at;
        (over_ms >= RATE_MIN_SPAN_MS).then(|| PerSecond {
            per_second: (last - first) as f64 * 1000.0 / over_ms as f64,
            over_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_is_the_growth_over_the_last_five_minutes() {
        let per_second = |rate: &Rate| rate.per_second().map(|r| (r.per_second, r.over_ms));
        let mut rate = Rate::default();
        assert_eq!(per_second(&rate), None);
        rate.add(0, 100);
        rate.add(30_000, 700);
        assert_eq!(per_second(&rate), None, "under a minute of readings");
        rate.add(60_000, 1_300);
        assert_eq!(per_second(&rate), Some((20.0, 60_000)));
        rate.add(60_000, 9_999);
        assert_eq!(per_second(&rate), Some((20.0, 60_000)), "a reused reading adds nothing");
        // Loads every 30 s: the window smooths them into one rate.
        rate.add(300_000, 1_300);
        assert_eq!(per_second(&rate), Some((4.0, 300_000)));
        rate.add(330_000, 7_300);
        // The sample at 0 fell out of the window: (7300 - 700) / 300 s.
        assert_eq!(per_second(&rate), Some((22.0, 300_000)));
        rate.add(331_000, 10);
        assert_eq!(per_second(&rate), None, "a counter that went down starts again");
    }
}
