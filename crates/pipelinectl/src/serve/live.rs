//! `/api/levels` and `/api/transitions`: LevelState and the busiest moves of the last
//! hour, read by the same functions as `levels` and `summary`.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use live_state::level_state::{self, LevelCount};
use pipeline_runtime::clock::now_ms;

use super::Page;
use super::store::{self, Cached, Reading};
use crate::summary::{self, Transition};

/// The page asks every second; a shorter reuse keeps it fresh while many open pages
/// still cost LevelState at most two scans a second.
const LEVELS_MAX_AGE: Duration = Duration::from_millis(500);
/// The page asks every 5 s; transitions are counted in minute buckets.
const TRANSITIONS_MAX_AGE: Duration = Duration::from_secs(2);

/// The recent readings of the live-state tables.
pub struct Live {
    levels: Cached<Vec<LevelCount>>,
    transitions: Cached<Vec<Transition>>,
}

impl Default for Live {
    fn default() -> Self {
        Self {
            levels: Cached::new("LevelState", LEVELS_MAX_AGE),
            transitions: Cached::new("Transitions", TRANSITIONS_MAX_AGE),
        }
    }
}

/// Every level with players on it now, most crowded first.
pub async fn levels(State(page): State<Arc<Page>>) -> Json<Reading<Vec<LevelCount>>> {
    let reading = page
        .live
        .levels
        .get(|| {
            store::read(page.store_timeout(), async {
                level_state::read_counts(&page.dynamodb, &page.args.stores.level_state_table)
                    .await
                    .map_err(|e| e.explain())
            })
        })
        .await;
    Json(reading)
}

/// The busiest transitions of the last hour, each summed over its minute buckets.
pub async fn transitions(State(page): State<Arc<Page>>) -> Json<Reading<Vec<Transition>>> {
    let reading = page
        .live
        .transitions
        .get(|| {
            store::read(page.store_timeout(), async {
                summary::read_top_transitions(
                    &page.dynamodb,
                    &page.args.stores.transitions_table,
                    now_ms() - summary::TRANSITIONS_WINDOW_MS,
                    usize::from(page.args.top_transitions),
                )
                .await
                .map_err(|e| e.explain())
            })
        })
        .await;
    Json(reading)
}
