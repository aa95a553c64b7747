//! The worker's read-only HTTP endpoint on the health port: `GET /levels` and
//! `GET /transitions?since=`, read through the `live-state` crate.

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use live_state::{level_state, transitions};
use pipeline_runtime::AwsError;
use pipeline_runtime::clock::now_ms;
use serde::{Deserialize, Serialize};

#[derive(Clone)]
struct Tables {
    dynamodb: aws_sdk_dynamodb::Client,
    levels: String,
    transitions: String,
}

#[derive(Deserialize)]
struct Since {
    /// Milliseconds since the epoch; default: the last hour.
    since: Option<i64>,
}

fn answer<T: Serialize>(result: Result<T, AwsError>) -> Response {
    match result {
        Ok(body) => axum::Json(body).into_response(),
        Err(error) => {
            tracing::warn!(%error, "live state read failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(serde_json::json!({"error": error.to_string()})),
            )
                .into_response()
        }
    }
}

/// `GET /levels` and `GET /transitions?since=<ms>` for a game backend to show counts on its map.
pub fn routes(dynamodb: aws_sdk_dynamodb::Client, levels_table: &str, transitions_table: &str) -> Router {
    let tables = Tables {
        dynamodb,
        levels: levels_table.to_string(),
        transitions: transitions_table.to_string(),
    };
    Router::new()
        .route(
            "/levels",
            get(
                |State(t): State<Tables>| async move { answer(level_state::read_counts(&t.dynamodb, &t.levels).await) },
            ),
        )
        .route(
            "/transitions",
            get(|State(t): State<Tables>, Query(q): Query<Since>| async move {
                let since = q.since.unwrap_or_else(|| now_ms() - 3_600_000);
                answer(transitions::read_since(&t.dynamodb, &t.transitions, since).await)
            }),
        )
        .with_state(tables)
}
