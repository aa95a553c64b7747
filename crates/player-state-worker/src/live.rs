//! Reading the live state back: level counts and recent transitions, for the worker's
//! read-only HTTP endpoint (`GET /levels`, `GET /transitions?since=`) and for
//! `pipelinectl levels`.

use pipeline_runtime::clock::now_ms;
use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};

use pipeline_runtime::AwsError;

use crate::level_stage::GUARD_BUCKET;

/// A level and how many players are on it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LevelCount {
    #[serde(rename = "levelId")]
    pub level_id: String,
    #[serde(rename = "playerCount")]
    pub player_count: i64,
}

/// How many players moved from one level to another within a time bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransitionCount {
    #[serde(rename = "bucketStart")]
    pub bucket_start: i64,
    pub from: String,
    pub to: String,
    pub count: i64,
}

fn number(item: &HashMap<String, AttributeValue>, name: &str) -> i64 {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn text(item: &HashMap<String, AttributeValue>, name: &str) -> String {
    item.get(name).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default()
}

/// Every level with players on it, most crowded first.
pub async fn levels(dynamodb: &aws_sdk_dynamodb::Client, table: &str) -> Result<Vec<LevelCount>, AwsError> {
    let mut counts = Vec::new();
    let mut start: Option<HashMap<String, AttributeValue>> = None;
    loop {
        let page = dynamodb
            .scan()
            .table_name(table)
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("dynamodb:Scan", e))?;
        counts.extend(
            page.items()
                .iter()
                .map(|item| LevelCount {
                    level_id: text(item, "levelId"),
                    player_count: number(item, "playerCount"),
                })
                .filter(|l| l.player_count != 0),
        );
        match page.last_evaluated_key {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => break,
        }
    }
    counts.sort_by(|a, b| {
        b.player_count
            .cmp(&a.player_count)
            .then_with(|| a.level_id.cmp(&b.level_id))
    });
    Ok(counts)
}

/// Transition counts of buckets starting at or after `since_ms`, oldest first.
pub async fn transitions(
    dynamodb: &aws_sdk_dynamodb::Client,
    table: &str,
    since_ms: i64,
) -> Result<Vec<TransitionCount>, AwsError> {
    let mut counts = Vec::new();
    let mut start: Option<HashMap<String, AttributeValue>> = None;
    loop {
        let page = dynamodb
            .scan()
            .table_name(table)
            .filter_expression("bucketStart >= :since AND bucketStart > :guard")
            .expression_attribute_values(":since", AttributeValue::N(since_ms.to_string()))
            .expression_attribute_values(":guard", AttributeValue::N(GUARD_BUCKET.to_string()))
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("dynamodb:Scan", e))?;
        counts.extend(page.items().iter().map(|item| TransitionCount {
            bucket_start: number(item, "bucketStart"),
            from: text(item, "fromLevel"),
            to: text(item, "toLevel"),
            count: number(item, "transitionCount"),
        }));
        match page.last_evaluated_key {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => break,
        }
    }
    counts.sort_by(|a, b| (a.bucket_start, &a.from, &a.to).cmp(&(b.bucket_start, &b.from, &b.to)));
    Ok(counts)
}

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
            get(|State(t): State<Tables>| async move { answer(levels(&t.dynamodb, &t.levels).await) }),
        )
        .route(
            "/transitions",
            get(|State(t): State<Tables>, Query(q): Query<Since>| async move {
                let since = q.since.unwrap_or_else(|| now_ms() - 3_600_000);
                answer(transitions(&t.dynamodb, &t.transitions, since).await)
            }),
        )
        .with_state(tables)
}
