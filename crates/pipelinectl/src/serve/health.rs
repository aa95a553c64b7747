//! `/api/health`: what flows in, from the same reads as `summary`: the lake's objects
//! and rejects by reason, the warehouse's rows and the age of its last load, and the
//! rates at which rows and rejects grow.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use pipeline_runtime::clock::now_ms;
use serde::Serialize;

use super::Page;
use super::store::{self, Cached, Reading};
use crate::summary::{self, Lake, RejectCounts, Totals};

/// The page asks every 5 s; listing the lake is the dearest read here.
const HEALTH_MAX_AGE: Duration = Duration::from_secs(2);
/// Rates are measured over the last minute of readings.
const RATE_WINDOW_MS: i64 = 60_000;

/// The health panel's recent readings, the rejects counted so far (each error file is
/// read once), and the samples rates are measured from.
pub struct HealthState {
    lake: Cached<Lake>,
    warehouse: Cached<Totals>,
    rejects: tokio::sync::Mutex<RejectCounts>,
    rates: Mutex<Rates>,
}

#[derive(Default)]
struct Rates {
    rows: Rate,
    rejects: Rate,
}

impl Default for HealthState {
    fn default() -> Self {
        Self {
            lake: Cached::new("lake", HEALTH_MAX_AGE),
            warehouse: Cached::new("warehouse", HEALTH_MAX_AGE),
            rejects: tokio::sync::Mutex::new(RejectCounts::default()),
            rates: Mutex::new(Rates::default()),
        }
    }
}

/// The health panel.
#[derive(Debug, Serialize)]
pub struct Health {
    pub lake: Reading<Lake>,
    pub warehouse: Reading<Totals>,
    /// Rows loaded into the warehouse per second over the last minute; `None` until two
    /// readings a second apart.
    pub rows_per_second: Option<f64>,
    /// Records rejected into `errors/` per second over the last minute.
    pub rejects_per_second: Option<f64>,
    /// Time since the warehouse's last load, by this server's clock.
    pub last_load_age_ms: Option<i64>,
}

pub async fn health(State(page): State<Arc<Page>>) -> Json<Health> {
    let timeout = page.store_timeout();
    let lake = page.health.lake.get(|| {
        store::read(timeout, async {
            let mut rejects = page.health.rejects.lock().await;
            summary::read_lake(&page.s3, &page.args.stores.bucket, &mut rejects)
                .await
                .map_err(|e| format!("{e:#}"))
        })
    });
    let warehouse = page.health.warehouse.get(|| async {
        match &page.warehouse {
            Ok(warehouse) => {
                store::read(timeout, async {
                    summary::read_totals(warehouse).await.map_err(|e| format!("{e:#}"))
                })
                .await
            }
            Err(reason) => Reading::down(reason.clone()),
        }
    });
    let (lake, warehouse) = tokio::join!(lake, warehouse);
    let (rows_per_second, rejects_per_second) = {
        // A poisoned lock only means a panic elsewhere mid-update; the samples stay usable.
        let mut rates = page.health.rates.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(totals) = &warehouse.data {
            rates
                .rows
                .add(warehouse.at_ms, u64::try_from(totals.rows_loaded).unwrap_or(0));
        }
        if let Some(data) = &lake.data {
            rates.rejects.add(lake.at_ms, data.rejected.values().sum());
        }
        (rates.rows.per_second(), rates.rejects.per_second())
    };
    let last_load_age_ms = warehouse
        .data
        .and_then(|t| t.last_load_ms)
        .map(|at| (now_ms() - at).max(0));
    Json(Health {
        lake,
        warehouse,
        rows_per_second,
        rejects_per_second,
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
    /// least a second apart.
    pub fn per_second(&self) -> Option<f64> {
        let (&(first_at, first), &(last_at, last)) = (self.samples.front()?, self.samples.back()?);
        let seconds = (last_at - first_at) as f64 / 1000.0;
        (seconds >= 1.0).then(|| (last - first) as f64 / seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_is_the_growth_over_the_last_minute() {
        let mut rate = Rate::default();
        assert_eq!(rate.per_second(), None);
        rate.add(0, 100);
        rate.add(500, 110);
        assert_eq!(rate.per_second(), None, "under a second apart");
        rate.add(10_000, 300);
        assert_eq!(rate.per_second(), Some(20.0));
        rate.add(10_000, 999);
        assert_eq!(rate.per_second(), Some(20.0), "a reused reading adds nothing");
        rate.add(70_000, 1_500);
        // The samples at 0 and 500 fell out of the minute: (1500 - 300) / 60 s.
        assert_eq!(rate.per_second(), Some(20.0));
        rate.add(71_000, 10);
        assert_eq!(rate.per_second(), None, "a counter that went down starts again");
    }
}
