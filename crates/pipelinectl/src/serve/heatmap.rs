//! `/heatmap.png?level=&event_type=&since=&until=`: `heatmap`'s query (the same
//! [`HeatmapSpec`], its values bound) drawn into a PNG in memory, with the events it
//! counts in `X-Heatmap-Events`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::Page;
use crate::heatmap::{self, HeatmapSpec, Output, When};

/// Heat map queries running at once. A query runs on in the warehouse after the page
/// stops waiting for it, so its turn is held until it really ends: a page clicked
/// through quickly, or a slow warehouse, never has more than this many running.
const CONCURRENT_HEATMAPS: usize = 2;
/// Width of the map area of the page's heat maps, in pixels.
const IMAGE_WIDTH: u32 = 800;
/// The longest level id and event type the event model accepts.
const MAX_LEVEL_ID: usize = 64;
const MAX_EVENT_TYPE: usize = 256;
/// The longest time range one heat map reads: a month, a bounded scan.
pub const MAX_RANGE_MS: i64 = 31 * 86_400_000;
/// A drawn heat map is reused for the same parameters this long (pages open together,
/// a choice submitted again).
const CACHE_FOR: Duration = Duration::from_secs(5);
/// Heat maps kept at most (a few hundred KiB each).
const CACHE_ENTRIES: usize = 32;
/// The header carrying the events the heat map counts (inside the map).
pub const EVENTS_HEADER: &str = "x-heatmap-events";

/// Bounds the heat map queries running at once, and keeps the recent heat maps.
pub struct Limit {
    turns: Arc<tokio::sync::Semaphore>,
    drawn: Mutex<HashMap<Params, (Instant, Arc<Drawn>)>>,
}

impl Default for Limit {
    fn default() -> Self {
        Self {
            turns: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_HEATMAPS)),
            drawn: Mutex::new(HashMap::new()),
        }
    }
}

impl Limit {
    fn recent(&self, params: &Params) -> Option<Arc<Drawn>> {
        // A poisoned lock only means a panic elsewhere mid-update; the map stays usable.
        let drawn = self.drawn.lock().unwrap_or_else(|e| e.into_inner());
        drawn
            .get(params)
            .filter(|(at, _)| at.elapsed() < CACHE_FOR)
            .map(|(_, png)| png.clone())
    }

    fn keep(&self, params: Params, png: Arc<Drawn>) {
        let mut drawn = self.drawn.lock().unwrap_or_else(|e| e.into_inner());
        drawn.retain(|_, (at, _)| at.elapsed() < CACHE_FOR);
        if drawn.len() < CACHE_ENTRIES {
            drawn.insert(params, (Instant::now(), png));
        }
    }
}

/// A heat map drawn.
struct Drawn {
    png: Vec<u8>,
    events: u64,
}

/// The query string, as given (the key of the recent heat maps: `since=1h` is the last
/// hour whenever it is asked).
#[derive(Debug, Default, Clone, PartialEq, Eq, Hash, Deserialize)]
pub struct Params {
    pub level: Option<String>,
    pub event_type: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
}

/// A heat map's settings from the query string, or what is wrong with it.
pub fn spec(params: &Params, page_args: &super::ServeArgs, background: Option<PathBuf>) -> Result<HeatmapSpec, String> {
    let level = params.level.as_deref().unwrap_or_default();
    if level.is_empty() || level.len() > MAX_LEVEL_ID {
        return Err(format!("level: give a level id of 1 to {MAX_LEVEL_ID} bytes"));
    }
    let event_type = params.event_type.as_deref().unwrap_or("player_death");
    if event_type.is_empty() || event_type.len() > MAX_EVENT_TYPE {
        return Err(format!("event_type: give an event type of 1 to {MAX_EVENT_TYPE} bytes"));
    }
    let when = |name: &str, value: Option<&str>, default: &str| {
        value
            .unwrap_or(default)
            .parse::<When>()
            .map_err(|e| format!("{name}: {e}"))
    };
    let since = when("since", params.since.as_deref(), "24h")?;
    let until = when("until", params.until.as_deref(), "now")?;
    if since.0 >= until.0 {
        return Err("since: must be before until".into());
    }
    // A minute's slack: `since=31d` and `until=now` are read a moment apart.
    if until.0 - since.0 > MAX_RANGE_MS + 60_000 {
        return Err(format!(
            "since: at most {} days before until (a longer range is `pipelinectl heatmap`'s)",
            MAX_RANGE_MS / 86_400_000
        ));
    }
    Ok(HeatmapSpec {
        level: level.to_string(),
        event_type: event_type.to_string(),
        since,
        until,
        grid: (heatmap::DEFAULT_COLUMNS, heatmap::DEFAULT_ROWS),
        map_width: page_args.map_width,
        map_height: page_args.map_height,
        background,
        image_width: IMAGE_WIDTH,
        format: Output::Png,
        filters: Vec::new(),
        output: PathBuf::new(),
    })
}

fn text(status: StatusCode, message: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], message).into_response()
}

fn png(drawn: &Drawn) -> Response {
    let mut response = ([(header::CONTENT_TYPE, "image/png")], drawn.png.clone()).into_response();
    response
        .headers_mut()
        .insert(EVENTS_HEADER, HeaderValue::from(drawn.events));
    response
}

/// 200 with the PNG; 400 naming the bad parameter; 503 when the warehouse is down or
/// busy with earlier heat maps.
pub async fn heatmap(State(page): State<Arc<Page>>, Query(params): Query<Params>) -> Response {
    let background = params
        .level
        .as_ref()
        .and_then(|level| page.pictures.get(level))
        .cloned();
    let spec = match spec(&params, &page.args, background) {
        Ok(spec) => spec,
        Err(message) => return text(StatusCode::BAD_REQUEST, message),
    };
    let query = match spec.query() {
        Ok(query) => query,
        Err(error) => return text(StatusCode::BAD_REQUEST, format!("{error:#}")),
    };
    if let Err(reason) = &page.warehouse {
        return text(StatusCode::SERVICE_UNAVAILABLE, format!("warehouse down: {reason}"));
    }
    if let Some(drawn) = page.heatmaps.recent(&params) {
        return png(&drawn);
    }
    let timeout = page.store_timeout();
    let deadline = tokio::time::Instant::now() + timeout;
    let turn = match tokio::time::timeout_at(deadline, page.heatmaps.turns.clone().acquire_owned()).await {
        Ok(Ok(turn)) => turn,
        Ok(Err(_)) | Err(_) => {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "warehouse down: {CONCURRENT_HEATMAPS} earlier heat maps still wait for the warehouse after {} ms",
                    timeout.as_millis()
                ),
            );
        }
    };
    // The query in a task of its own, holding the turn until the warehouse answers,
    // whether or not this request still waits for it.
    let running = tokio::spawn({
        let page = page.clone();
        async move {
            let _turn = turn;
            match &page.warehouse {
                Ok(warehouse) => heatmap::count(warehouse, &query).await.map_err(|e| e.to_string()),
                Err(reason) => Err(reason.clone()),
            }
        }
    });
    let grid = match tokio::time::timeout_at(deadline, running).await {
        Ok(Ok(Ok(grid))) => grid,
        Ok(Ok(Err(error))) => return text(StatusCode::SERVICE_UNAVAILABLE, format!("warehouse down: {error}")),
        Ok(Err(error)) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the heat map query stopped: {error}"),
            );
        }
        Err(_) => {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("warehouse down: no answer within {} ms", timeout.as_millis()),
            );
        }
    };
    let events = grid.total();
    // Decoding the picture, drawing and encoding are CPU work: off the request threads.
    let drawn = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, String> {
        let background = match &spec.background {
            Some(path) => Some(
                image::open(path)
                    .map_err(|e| format!("level picture {}: {e}", path.display()))?
                    .to_rgb8(),
            ),
            None => None,
        };
        let mut png = std::io::Cursor::new(Vec::new());
        spec.picture(&grid, background.as_ref())
            .write_to(&mut png, image::ImageFormat::Png)
            .map_err(|e| format!("encoding the PNG: {e}"))?;
        Ok(png.into_inner())
    })
    .await;
    match drawn {
        Ok(Ok(bytes)) => {
            let drawn = Arc::new(Drawn { png: bytes, events });
            page.heatmaps.keep(params, drawn.clone());
            png(&drawn)
        }
        Ok(Err(message)) => text(StatusCode::INTERNAL_SERVER_ERROR, message),
        Err(error) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("drawing the heat map: {error}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: super::super::ServeArgs,
    }

    fn args() -> super::super::ServeArgs {
        Cli::try_parse_from(["serve", "--bucket=lake"]).expect("args").serve
    }

    fn params(level: Option<&str>, since: Option<&str>, until: Option<&str>) -> Params {
        Params {
            level: level.map(str::to_string),
            event_type: None,
            since: since.map(str::to_string),
            until: until.map(str::to_string),
        }
    }

    #[test]
    fn bad_parameters_are_named_and_a_hostile_level_is_only_a_value() {
        let args = args();
        for (bad, named) in [
            (params(None, None, None), "level"),
            (params(Some(""), None, None), "level"),
            (params(Some(&"x".repeat(65)), None, None), "level"),
            (params(Some("level-01"), Some("yesterday"), None), "since"),
            (params(Some("level-01"), None, Some("h")), "until"),
        ] {
            let error = spec(&bad, &args, None).expect_err("refused");
            assert!(error.starts_with(named), "{error}");
        }
        let hostile = "O'Brien'; DROP TABLE events; --";
        let ok = spec(&params(Some(hostile), Some("2h"), None), &args, None).expect("accepted");
        let query = ok.query().expect("query");
        assert_eq!(query.level_id, hostile);
        assert_eq!(query.event_type, "player_death");
        assert!(
            !query
                .query(warehouse::schema::Dialect::Postgres)
                .sql
                .contains("O'Brien")
        );
        let backwards = spec(&params(Some("level-01"), Some("now"), Some("1h")), &args, None);
        assert!(backwards.expect_err("since after until").starts_with("since"));
        let century = spec(&params(Some("level-01"), Some("36500d"), None), &args, None);
        assert!(
            century
                .expect_err("too long a range")
                .starts_with("since: at most 31 days")
        );
        assert!(spec(&params(Some("level-01"), Some("31d"), None), &args, None).is_ok());
        let month = spec(
            &params(
                Some("level-01"),
                Some("2026-01-01T00:00:00Z"),
                Some("2026-02-01T00:00:00Z"),
            ),
            &args,
            None,
        );
        assert!(month.is_ok(), "exactly 31 days");
    }
}
