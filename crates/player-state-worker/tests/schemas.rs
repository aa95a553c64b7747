//! With the game's JSON Schemas (`EVENT_SCHEMAS`, `SCHEMA_MODE`), the events stage
//! moves players only on events that match them, as the s3-connector loads only those:
//! live state and the warehouse agree on what a valid event is.

use std::time::Duration;

use pipeline_runtime::clock::now_ms;
use pipeline_tests::process::ServiceProcess;
use pipeline_tests::resources::Resources;
use pipeline_tests::stack;
use pipeline_tests::wait::eventually;

const BIN: &str = env!("CARGO_BIN_EXE_player-state-worker");

fn event(player: &str, event_type: &str, level: &str, ts: i64, event_data: serde_json::Value) -> Vec<u8> {
    serde_json::json!({
        "event_id": uuid::Uuid::new_v4().to_string(),
        "client_id": player,
        "app_name": "SampleGame",
        "event_version": "1.0",
        "event_type": event_type,
        "event_timestamp": ts,
        "level_id": level,
        "position_x": 10,
        "position_y": 20.5,
        "event_data": event_data,
    })
    .to_string()
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_violations_never_move_a_player_and_are_counted_by_reason() {
    let aws = stack::aws().await;
    let resources = Resources::unique();
    resources.create(&aws).await;
    let (a, b) = (uuid::Uuid::new_v4().to_string(), uuid::Uuid::new_v4().to_string());
    let t = now_ms() - 10_000;
    let lava = serde_json::json!({"cause": "lava", "weapon": null});
    let records = vec![
        // a dies on level-01: valid.
        (a.clone(), event(&a, "player_death", "level-01", t, lava.clone())),
        // a's later move to level-03 breaks its schema (no cause): a stays on level-01.
        (
            a.clone(),
            event(
                &a,
                "player_death",
                "level-03",
                t + 1_000,
                serde_json::json!({"weapon": "bow"}),
            ),
        ),
        // b's only event breaks its schema (a price as text): b is nowhere.
        (
            b.clone(),
            event(
                &b,
                "purchase",
                "level-02",
                t,
                serde_json::json!({"sku": "sword-01", "price": "4.99", "currency": "EUR"}),
            ),
        ),
    ];
    stack::put_records(&aws, resources.name("TELEMETRY_STREAM"), &records).await;

    let schemas = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sample-data/schemas");
    let schemas = schemas.to_str().expect("utf8 path").to_string();
    let mut env = resources.env();
    env.extend_from_slice(&[
        ("IDLE_BETWEEN_READS_MS", "200"),
        ("METRICS_FLUSH_INTERVAL_SECS", "1"),
        ("EVENT_SCHEMAS", schemas.as_str()),
        ("SCHEMA_MODE", "known"),
    ]);
    let mut worker = ServiceProcess::start(BIN, &env);
    let player_state = resources.name("PLAYER_STATE_TABLE");
    let level_state = resources.name("LEVEL_STATE_TABLE");
    let state = || async {
        let players: Vec<(String, String)> = stack::scan_table(&aws, player_state)
            .await
            .expect("scan PlayerState")
            .iter()
            .map(|item| (stack::item_text(item, "playerId"), stack::item_text(item, "levelId")))
            .collect();
        let levels: Vec<(String, i64)> = stack::scan_table(&aws, level_state)
            .await
            .expect("scan LevelState")
            .iter()
            .map(|item| {
                let count = stack::item_number(item, "playerCount").unwrap_or(0);
                (stack::item_text(item, "levelId"), count)
            })
            .filter(|(_, count)| *count != 0)
            .collect();
        (players, levels)
    };
    let expected = (
        vec![(a.clone(), "level-01".to_string())],
        vec![("level-01".to_string(), 1)],
    );
    let caught_up = eventually(Duration::from_secs(60), || async { state().await == expected }).await;
    assert!(caught_up, "{:?}", state().await);
    // The violations sit after a's valid event in its shard: give them time to (not) apply.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(state().await, expected);

    worker.terminate();
    assert!(worker.wait_exit(Duration::from_secs(30)).is_some_and(|s| s.success()));
    let skipped: f64 = worker
        .json_lines()
        .iter()
        .filter(|l| l["Reason"] == "schema_violation")
        .filter_map(|l| l["SkippedEvents"].as_f64())
        .sum();
    assert_eq!(skipped, 2.0, "both violations are counted by reason");
    resources.delete(&aws).await;
}
