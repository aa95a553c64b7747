//! Live state on the local stack (run `deploy/local/up` and `eval "$(deploy/local/env)"`
//! first): DynamoDB writes per 1,000 events next to the seed design's, and the time
//! from PutRecords to LevelState showing a move. `cargo bench -p player-state-worker`.

use pipeline_runtime::clock::now_ms;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use pipeline_runtime::health::Health;
use pipeline_runtime::{AwsClients, Metrics, ServiceContext};
use pipeline_tests::resources::Resources;
use pipeline_tests::stack;
use player_state_worker::Config;
use tokio_util::sync::CancellationToken;

const EVENTS: usize = 10_000;
const PLAYERS: usize = 500;
const LEVELS: usize = 20;
const PROBES: usize = 100;

fn event(player: &str, level: &str, timestamp: i64) -> Vec<u8> {
    serde_json::json!({
        "event_id": uuid::Uuid::new_v4().to_string(),
        "client_id": player,
        "app_name": "SampleGame",
        "event_version": "1.0",
        "event_type": "level_start",
        "event_timestamp": timestamp,
        "level_id": level,
    })
    .to_string()
    .into_bytes()
}

/// (player, level, event time) in stream order: 5% sent twice, 5% swapped with a neighbour.
fn workload() -> Vec<(String, String, i64)> {
    let mut rng = fastrand::Rng::with_seed(42);
    let players: Vec<String> = (0..PLAYERS).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let base = now_ms() - 60_000;
    let mut events: Vec<(String, String, i64)> = (0..EVENTS)
        .map(|t| {
            (
                players[rng.usize(..PLAYERS)].clone(),
                format!("level-{:02}", rng.usize(..LEVELS)),
                base + t as i64 * 5,
            )
        })
        .collect();
    for i in 1..events.len() {
        if rng.f64() < 0.05 {
            events.swap(i - 1, i);
        }
    }
    let duplicates: Vec<usize> = (0..events.len()).filter(|_| rng.f64() < 0.05).collect();
    for i in duplicates {
        let copy = events[i].clone();
        let at = rng.usize(i..=events.len());
        events.insert(at, copy);
    }
    events
}

/// What the seed design writes: one UpdateItem per event, two more per level change it sees.
fn seed_writes(events: &[(String, String, i64)]) -> u64 {
    let mut state: HashMap<&str, (&str, i64)> = HashMap::new();
    let mut writes = 0;
    for (player, level, ts) in events {
        writes += 1;
        match state.get(player.as_str()) {
            Some((_, last)) if ts < last => {}
            Some((old, _)) => {
                if old != level {
                    writes += 2;
                }
                state.insert(player, (level, *ts));
            }
            None => {
                writes += 1;
                state.insert(player, (level, *ts));
            }
        }
    }
    writes
}

async fn count_players(aws: &AwsClients, table: &str) -> usize {
    let pages: Vec<_> = aws
        .dynamodb()
        .scan()
        .table_name(table)
        .into_paginator()
        .items()
        .send()
        .collect()
        .await;
    pages.len()
}

/// Starts the worker in this process with `extra` flags; metrics stay in memory.
fn start(
    resources: &Resources,
    aws: &AwsClients,
    extra: &[&str],
) -> (CancellationToken, Metrics, tokio::task::JoinHandle<()>) {
    let mut args = vec!["player-state-worker".to_string()];
    for var in [
        "TELEMETRY_STREAM",
        "PLAYER_STATE_TABLE",
        "LEVEL_STATE_TABLE",
        "TRANSITIONS_TABLE",
        "PLAYER_STATE_LEASE_TABLE",
        "LEVEL_STATE_LEASE_TABLE",
        "PRUNER_LEASE_TABLE",
        "BUCKET",
    ] {
        args.push(format!(
            "--{}={}",
            var.to_lowercase().replace('_', "-"),
            resources.name(var)
        ));
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let config: Config = pipeline_runtime::config::try_parse_from(args).expect("config");
    let metrics = Metrics::with_sink("Bench", "player-state-worker", Box::new(std::io::sink()));
    let shutdown = CancellationToken::new();
    let context = ServiceContext {
        name: "player-state-worker",
        shutdown: shutdown.clone(),
        metrics: metrics.clone(),
        health: Health::default(),
        aws: aws.clone(),
    };
    let task = tokio::spawn(async move {
        player_state_worker::run(config, context).await.expect("worker runs");
    });
    (shutdown, metrics, task)
}

fn counters(metrics: &Metrics) -> BTreeMap<String, f64> {
    let mut sums = BTreeMap::new();
    for document in metrics.take_documents(0) {
        let Some(names) = document["_aws"]["CloudWatchMetrics"][0]["Metrics"].as_array() else {
            continue;
        };
        for name in names.iter().filter_map(|m| m["Name"].as_str()) {
            if let Some(value) = document[name].as_f64() {
                *sums.entry(name.to_string()).or_default() += value;
            }
        }
    }
    sums
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let aws = stack::aws().await;
    let resources = Resources::unique();
    resources.create(&aws).await;
    let telemetry = resources.name("TELEMETRY_STREAM");

    // 1. Writes: the standard workload against a worker with production settings.
    let (stop, metrics, task) = start(
        &resources,
        &aws,
        &["--stages=events,levels", "--idle-timeout-secs=3600"],
    );
    let events = workload();
    let distinct_players = events
        .iter()
        .map(|(p, _, _)| p)
        .collect::<std::collections::HashSet<_>>()
        .len();
    let records: Vec<(String, Vec<u8>)> = events.iter().map(|(p, l, t)| (p.clone(), event(p, l, *t))).collect();
    let started = Instant::now();
    stack::put_records(&aws, telemetry, &records).await;
    while count_players(&aws, resources.name("PLAYER_STATE_TABLE")).await < distinct_players {
        // A worker that stopped (its panic is printed) never fills the table.
        assert!(
            !task.is_finished(),
            "the worker stopped before PlayerState held every player"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Let the last batches of both stages land.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let elapsed = started.elapsed();
    stop.cancel();
    let _ = task.await;
    let sums = counters(&metrics);
    let get = |name: &str| sums.get(name).copied().unwrap_or(0.0);
    // (Retried writes are not counted: the bench runs without faults.)
    let player_writes = get("PlayerUpdates") + get("StaleEvents");
    let transactions = get("LevelTransactions");
    let level_items = get("LevelDeltasApplied") + get("TransitionsApplied") + transactions;
    let ours = player_writes + level_items;
    let seed = seed_writes(&events) as f64;
    let per_thousand = |n: f64| n * 1000.0 / events.len() as f64;
    println!(
        "workload: {} records ({EVENTS} events + duplicates), {distinct_players} players, {LEVELS} levels; consumed in {:.1} s",
        events.len(),
        elapsed.as_secs_f64()
    );
    println!("                               | per 1,000 events");
    println!("PlayerState UpdateItem         | {:>8.1}", per_thousand(player_writes));
    println!(
        "LevelState+Transitions items   | {:>8.1}  (in {:.1} TransactWriteItems)",
        per_thousand(level_items),
        per_thousand(transactions)
    );
    println!("ours, total write requests     | {:>8.1}", per_thousand(ours));
    println!("seed design                    | {:>8.1}", per_thousand(seed));
    println!("ratio                          | {:>8.3}", ours / seed);

    // 2. Latency: one move at a time, from PutRecords to LevelState showing it.
    let (stop, _metrics, task) = start(
        &resources,
        &aws,
        &[
            "--stages=events,levels",
            "--idle-between-reads-ms=200",
            "--worker-id=latency",
        ],
    );
    tokio::time::sleep(Duration::from_secs(12)).await; // the previous worker's leases expire
    let mut latencies = Vec::new();
    for i in 0..PROBES {
        let player = uuid::Uuid::new_v4().to_string();
        let level = format!("probe-{i}");
        let put_at = Instant::now();
        stack::put_records(&aws, telemetry, &[(player.clone(), event(&player, &level, now_ms()))]).await;
        loop {
            let item = aws
                .dynamodb()
                .get_item()
                .table_name(resources.name("LEVEL_STATE_TABLE"))
                .key("levelId", AttributeValue::S(level.clone()))
                .send()
                .await
                .expect("get item")
                .item;
            if item
                .as_ref()
                .and_then(|i| i.get("playerCount"))
                .and_then(|v| v.as_n().ok())
                == Some(&"1".to_string())
            {
                break;
            }
            if put_at.elapsed() > Duration::from_secs(30) {
                panic!("probe {i} never reached LevelState");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        latencies.push(put_at.elapsed());
    }
    latencies.sort();
    println!(
        "PutRecords → LevelState ({PROBES} moves, reads every 200 ms): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        percentile(&latencies, 0.5).as_secs_f64() * 1000.0,
        percentile(&latencies, 0.99).as_secs_f64() * 1000.0,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1000.0
    );
    stop.cancel();
    let _ = task.await;
    resources.delete(&aws).await;
}
