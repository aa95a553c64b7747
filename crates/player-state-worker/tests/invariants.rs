//! The live-state invariants on the local stack, under duplicates, out-of-order events,
//! a worker killed mid-run and restarted, and pruning:
//! - each PlayerState item holds the level of that player's latest event (event time);
//! - LevelState.playerCount equals the number of PlayerState items on the level;
//! - no count is ever negative.

use pipeline_runtime::clock::now_ms;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use pipeline_runtime::AwsClients;
use pipeline_tests::process::ServiceProcess;
use pipeline_tests::resources::Resources;
use pipeline_tests::stack;
use pipeline_tests::wait::eventually;

const BIN: &str = env!("CARGO_BIN_EXE_player-state-worker");
const PLAYERS: usize = 40;
const LEVELS: usize = 8;
const EVENTS: usize = 800;

struct Sent {
    player: String,
    level: String,
    timestamp: i64,
    data: Vec<u8>,
}

/// Players moving among levels; event times strictly increase with `t`, then 5% are
/// sent twice and neighbours are swapped so that some older events arrive later.
fn workload(seed: u64) -> Vec<Sent> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let players: Vec<String> = (0..PLAYERS).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let base = now_ms() - 20_000;
    let mut sent: Vec<Sent> = (0..EVENTS)
        .map(|t| {
            let player = players[rng.usize(..PLAYERS)].clone();
            let level = format!("level-{:02}", rng.usize(..LEVELS));
            let timestamp = base + t as i64 * 10;
            let data = serde_json::json!({
                "event_id": uuid::Uuid::new_v4().to_string(),
                "client_id": player,
                "app_name": "SampleGame",
                "event_version": "1.0",
                "event_type": "level_start",
                "event_timestamp": timestamp,
                "level_id": level,
            })
            .to_string()
            .into_bytes();
            Sent {
                player,
                level,
                timestamp,
                data,
            }
        })
        .collect();
    for i in 1..sent.len() {
        if rng.f64() < 0.1 {
            sent.swap(i - 1, i);
        }
    }
    let duplicates: Vec<usize> = (0..sent.len()).filter(|_| rng.f64() < 0.05).collect();
    for i in duplicates {
        let copy = Sent {
            player: sent[i].player.clone(),
            level: sent[i].level.clone(),
            timestamp: sent[i].timestamp,
            data: sent[i].data.clone(),
        };
        sent.push(copy);
    }
    sent
}

async fn put(aws: &AwsClients, stream: &str, sent: &[Sent]) {
    let records: Vec<(String, Vec<u8>)> = sent.iter().map(|s| (s.player.clone(), s.data.clone())).collect();
    stack::put_records(aws, stream, &records).await;
}

/// The level of each player's latest event.
fn truth(sent: &[Sent]) -> BTreeMap<String, String> {
    let mut latest: HashMap<&str, (i64, &str)> = HashMap::new();
    for s in sent {
        let entry = latest.entry(&s.player).or_insert((s.timestamp, &s.level));
        if s.timestamp >= entry.0 {
            *entry = (s.timestamp, &s.level);
        }
    }
    latest
        .into_iter()
        .map(|(p, (_, l))| (p.to_string(), l.to_string()))
        .collect()
}

async fn player_levels(aws: &AwsClients, table: &str) -> BTreeMap<String, String> {
    stack::scan_table(aws, table)
        .await
        .expect("scan PlayerState")
        .iter()
        .map(|item| (stack::item_text(item, "playerId"), stack::item_text(item, "levelId")))
        .collect()
}

/// LevelState counts, levels at zero left out.
async fn level_counts(aws: &AwsClients, table: &str) -> BTreeMap<String, i64> {
    stack::scan_table(aws, table)
        .await
        .expect("scan LevelState")
        .iter()
        .map(|item| {
            (
                stack::item_text(item, "levelId"),
                stack::item_number(item, "playerCount").unwrap_or(0),
            )
        })
        .filter(|(_, count)| *count != 0)
        .collect()
}

fn recount(players: &BTreeMap<String, String>) -> BTreeMap<String, i64> {
    let mut counts = BTreeMap::new();
    for level in players.values() {
        *counts.entry(level.clone()).or_default() += 1;
    }
    counts
}

fn start(resources: &Resources, worker: &str, extra: &[(&str, &str)]) -> ServiceProcess {
    let mut env = resources.env();
    env.extend_from_slice(&[
        ("WORKER_ID", worker),
        ("LEASE_FAILOVER_SECS", "3"),
        ("IDLE_BETWEEN_READS_MS", "200"),
        ("PRUNE_INTERVAL_SECS", "1"),
    ]);
    env.extend_from_slice(extra);
    ServiceProcess::start(BIN, &env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_match_players_through_duplicates_reordering_a_kill_and_pruning() {
    let aws = stack::aws().await;
    let resources = Resources::unique();
    resources.create(&aws).await;
    let (telemetry, players_table, levels_table) = (
        resources.name("TELEMETRY_STREAM"),
        resources.name("PLAYER_STATE_TABLE"),
        resources.name("LEVEL_STATE_TABLE"),
    );

    // Watch LevelState the whole time: no count may ever be seen below zero.
    let lowest = Arc::new(AtomicI64::new(0));
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = {
        let (aws, table, lowest, watching) = (aws.clone(), levels_table.to_string(), lowest.clone(), watching.clone());
        tokio::spawn(async move {
            while watching.load(Ordering::Relaxed) {
                for count in level_counts(&aws, &table).await.values() {
                    lowest.fetch_min(*count, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    let sent = workload(7);
    let expected = truth(&sent);
    let half = sent.len() / 2;
    let mut first = start(&resources, "first", &[("IDLE_TIMEOUT_SECS", "600")]);
    put(&aws, telemetry, &sent[..half]).await;
    // Killed while it works through the first half: no release, no flush.
    assert!(
        eventually(Duration::from_secs(30), || async {
            !player_levels(&aws, players_table).await.is_empty()
        })
        .await,
        "the first worker starts writing"
    );
    first.kill();
    put(&aws, telemetry, &sent[half..]).await;
    let mut second = start(&resources, "second", &[("IDLE_TIMEOUT_SECS", "600")]);

    let players_right = eventually(Duration::from_secs(90), || async {
        player_levels(&aws, players_table).await == expected
    })
    .await;
    let actual = player_levels(&aws, players_table).await;
    assert!(
        players_right,
        "PlayerState differs from the latest event per player: {} of {} right",
        actual.iter().filter(|(p, l)| expected.get(*p) == Some(l)).count(),
        expected.len()
    );
    let counts_right = eventually(Duration::from_secs(60), || async {
        level_counts(&aws, levels_table).await == recount(&expected)
    })
    .await;
    assert!(
        counts_right,
        "LevelState {:?} != recount of PlayerState {:?}",
        level_counts(&aws, levels_table).await,
        recount(&expected)
    );
    // The read-only endpoint shows the same counts.
    let addr = second.health_addr(Duration::from_secs(5));
    let (status, body) = pipeline_tests::process::http_get(addr, "/levels").expect("GET /levels");
    assert_eq!(status, 200, "{body}");
    let served: Vec<serde_json::Value> = serde_json::from_str(&body).expect("JSON");
    let served: BTreeMap<String, i64> = served
        .iter()
        .map(|l| {
            (
                l["levelId"].as_str().unwrap_or_default().to_string(),
                l["playerCount"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(served, recount(&expected));
    let (status, body) = pipeline_tests::process::http_get(addr, "/transitions?since=0").expect("GET /transitions");
    assert_eq!(status, 200, "{body}");
    let transitions: Vec<serde_json::Value> = serde_json::from_str(&body).expect("JSON");
    assert!(!transitions.is_empty(), "players moved between levels");
    assert!(
        transitions
            .iter()
            .all(|t| t["count"].as_i64().is_some_and(|c| c > 0) && t["from"] != t["to"])
    );
    second.terminate();
    assert!(second.wait_exit(Duration::from_secs(30)).is_some_and(|s| s.success()));

    // Every player is idle by now: the pruner removes them all and the counts follow.
    let mut pruner = start(&resources, "pruner", &[("IDLE_TIMEOUT_SECS", "1")]);
    let all_gone = eventually(Duration::from_secs(60), || async {
        player_levels(&aws, players_table).await.is_empty() && level_counts(&aws, levels_table).await.is_empty()
    })
    .await;
    assert!(
        all_gone,
        "after pruning: {} players, counts {:?}",
        player_levels(&aws, players_table).await.len(),
        level_counts(&aws, levels_table).await
    );
    pruner.terminate();
    assert!(pruner.wait_exit(Duration::from_secs(30)).is_some_and(|s| s.success()));
    watching.store(false, Ordering::Relaxed);
    let _ = watcher.await;
    assert!(lowest.load(Ordering::Relaxed) >= 0, "a negative count was seen");
    resources.delete(&aws).await;
}

/// A pruner whose lease was lost (`pipelinectl reconcile-levels` pausing it, or another
/// pruner) deletes nothing more in the pass under way, not only from its next pass on.
#[tokio::test]
async fn a_pruner_that_lost_its_lease_stops_before_its_next_delete() {
    use aws_sdk_dynamodb::types::AttributeValue;
    use live_state::player_state::{LAST_UPDATED, LEVEL_ID, PLAYER_ID};
    use player_state_worker::pruner::Pruner;
    use shard_consumer::LeaseTable;
    use shard_consumer::singleton::SingletonLease;
    use tokio_util::sync::CancellationToken;

    let aws = stack::aws().await;
    let resources = Resources::unique();
    resources.create(&aws).await;
    let table = resources.name("PLAYER_STATE_TABLE");
    for player in ["p1", "p2", "p3"] {
        aws.dynamodb()
            .put_item()
            .table_name(table)
            .item(PLAYER_ID, AttributeValue::S(player.into()))
            .item(LEVEL_ID, AttributeValue::S("level-a".into()))
            .item(LAST_UPDATED, AttributeValue::N("1".into()))
            .send()
            .await
            .expect("an idle player");
    }
    let pruner = Pruner {
        dynamodb: aws.dynamodb(),
        table: table.to_string(),
        level_state_table: resources.name("LEVEL_STATE_TABLE").to_string(),
        idle_timeout: Duration::from_secs(1),
        interval: Duration::from_secs(1),
        segments: 2,
        lease: SingletonLease::new(
            LeaseTable::new(aws.dynamodb(), resources.name("PRUNER_LEASE_TABLE")),
            "pruner",
            "test-pruner",
            Duration::from_secs(10),
        ),
        metrics: pipeline_runtime::Metrics::with_sink("test", "pruner", Box::new(std::io::sink())),
    };
    let lost = CancellationToken::new();
    lost.cancel();
    assert_eq!(pruner.prune_once(&lost).await.expect("a pass"), 0);
    let left = stack::scan_table(&aws, table).await.expect("scan PlayerState");
    assert_eq!(left.len(), 3, "nothing deleted once the lease is lost");
    let held = CancellationToken::new();
    assert_eq!(pruner.prune_once(&held).await.expect("a pass"), 3);
    resources.delete(&aws).await;
}
