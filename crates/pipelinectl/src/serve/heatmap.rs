//! `/heatmap.png?level=&event_type=&since=&until=`: `heatmap`'s query (the same
//! [`HeatmapSpec`], its values bound) drawn into a PNG in memory.

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::Page;
use crate::heatmap::{self, HeatmapSpec, Output, When};

/// Heat maps drawn at once; more wait their turn (within the store timeout), so a
/// page clicked through quickly cannot queue the warehouse up.
const CONCURRENT_HEATMAPS: usize = 2;
/// Width of the map area of the page's heat maps, in pixels.
const IMAGE_WIDTH: u32 = 800;
/// The longest level id and event type the event model accepts.
const MAX_LEVEL_ID: usize = 64;
const MAX_EVENT_TYPE: usize = 256;

/// Bounds the heat maps drawn at once.
pub struct Limit(tokio::sync::Semaphore);

impl Default for Limit {
    fn default() -> Self {
        Self(tokio::sync::Semaphore::new(CONCURRENT_HEATMAPS))
    }
}

/// The query string, as given.
#[derive(Debug, Default, Deserialize)]
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

/// 200 with the PNG; 400 naming the bad parameter; 503 when the warehouse is down.
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
    let warehouse = match &page.warehouse {
        Ok(warehouse) => warehouse,
        Err(reason) => return text(StatusCode::SERVICE_UNAVAILABLE, format!("warehouse down: {reason}")),
    };
    let timeout = page.store_timeout();
    let counted = tokio::time::timeout(timeout, async {
        let _turn = page.heatmaps.0.acquire().await;
        heatmap::count(warehouse, &query).await
    })
    .await;
    let grid = match counted {
        Ok(Ok(grid)) => grid,
        Ok(Err(error)) => return text(StatusCode::SERVICE_UNAVAILABLE, format!("warehouse down: {error}")),
        Err(_) => {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("warehouse down: no answer within {} ms", timeout.as_millis()),
            );
        }
    };
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
        Ok(Ok(png)) => ([(header::CONTENT_TYPE, "image/png")], png).into_response(),
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
    }
}
