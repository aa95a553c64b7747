//! The warehouse path end to end on the local stack: telemetry → s3-connector → batch
//! files and pointers → redshift-connector → PostgreSQL. Rows equal the distinct valid
//! events; replayed and duplicated pointers and a killed loader add nothing.

use pipeline_runtime::clock::now_ms;
use std::collections::HashSet;
use std::time::Duration;

use pipeline_tests::process::{ServiceProcess, workspace_binary};
use pipeline_tests::resources::Resources;
use pipeline_tests::stack;

fn event(id: &str) -> Vec<u8> {
    serde_json::json!({
        "event_id": id,
        "client_id": uuid::Uuid::new_v4().to_string(),
        "app_name": "SampleGame",
        "event_version": "1.0",
        "event_type": "player_death",
        "event_timestamp": now_ms() - 5_000,
        "level_id": "level-02",
        "position_x": 3.5,
        "position_y": -1.25,
    })
    .to_string()
    .into_bytes()
}

async fn count(sql: &tokio_postgres::Client, query: &str) -> i64 {
    sql.query_one(query, &[]).await.map(|row| row.get(0)).unwrap_or(-1)
}

async fn wait_for_rows(sql: &tokio_postgres::Client, rows: i64, timeout: Duration) -> i64 {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let n = count(sql, "SELECT COUNT(*) FROM events").await;
        if n >= rows || tokio::time::Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_events_reach_the_warehouse_exactly_once() {
    let aws = stack::aws().await;
    let resources = Resources::unique();
    resources.create(&aws).await;
    let schema = stack::warehouse_schema("e2e").await;
    let (url, sql) = (schema.users.loader.clone(), &schema.sql);

    let ids: Vec<String> = (0..300).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let mut records: Vec<Vec<u8>> = ids.iter().map(|id| event(id)).collect();
    // 5% sent twice by the game, and some garbage.
    let resent: Vec<Vec<u8>> = records.iter().step_by(20).cloned().collect();
    records.extend(resent);
    records.extend((0..10).map(|i| format!("{{broken {i}").into_bytes()));
    stack::put_spread(&aws, resources.name("TELEMETRY_STREAM"), &records).await;

    let mut env = resources.env();
    env.extend_from_slice(&[
        ("BATCH_MAX_AGE_SECS", "1"),
        ("BATCH_MAX_RECORDS", "100"),
        ("LOAD_MAX_AGE_SECS", "1"),
        ("LOAD_MAX_FILES", "3"),
        ("IDLE_BETWEEN_READS_MS", "200"),
        ("LEASE_FAILOVER_SECS", "3"),
        ("METRICS_FLUSH_INTERVAL_SECS", "1"),
        ("WAREHOUSE_URL", &url),
    ]);
    let mut s3_connector = ServiceProcess::start(&workspace_binary("s3-connector"), &env);
    let mut loader = ServiceProcess::start(&workspace_binary("redshift-connector"), &env);

    let rows = wait_for_rows(sql, ids.len() as i64, Duration::from_secs(90)).await;
    assert_eq!(rows, ids.len() as i64, "rows equal the distinct valid events");

    // Kill the loader, replay every pointer (duplicated pointers, as after a crash
    // between commit and checkpoint), restart it: nothing new.
    loader.kill();
    let files = resources.name("FILES_STREAM");
    let pointers: Vec<Vec<u8>> = stack::read_stream(&aws, files)
        .await
        .iter()
        .map(|r| r.data().as_ref().to_vec())
        .collect();
    assert!(!pointers.is_empty());
    stack::put_spread(&aws, files, &pointers).await;
    env.push(("WORKER_ID", "second-loader"));
    let mut loader = ServiceProcess::start(&workspace_binary("redshift-connector"), &env);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let skipped_all = loop {
        let logs = loader.json_lines();
        let skipped: f64 = logs.iter().filter_map(|l| l["FilesSkipped"].as_f64()).sum();
        if skipped >= pointers.len() as f64 || tokio::time::Instant::now() > deadline {
            break skipped;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        skipped_all >= pointers.len() as f64,
        "every replayed pointer was recognised as loaded ({skipped_all} of {})",
        pointers.len()
    );
    assert_eq!(count(sql, "SELECT COUNT(*) FROM events").await, ids.len() as i64);
    let stored: HashSet<String> = sql
        .query("SELECT event_id FROM events", &[])
        .await
        .expect("ids")
        .iter()
        .map(|row| row.get::<_, String>(0))
        .collect();
    assert_eq!(stored, ids.into_iter().collect::<HashSet<_>>());

    for service in [&mut loader, &mut s3_connector] {
        service.terminate();
        assert!(service.wait_exit(Duration::from_secs(30)).is_some_and(|s| s.success()));
    }
    resources.delete(&aws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_data_reaches_the_warehouse_value_equal_to_what_was_sent() {
    let aws = stack::aws().await;
    let resources = Resources::unique();
    resources.create(&aws).await;
    let schema = stack::warehouse_schema("event_data").await;
    let (url, sql) = (schema.users.loader.clone(), &schema.sql);

    let mut sent = std::collections::BTreeMap::new();
    let records: Vec<Vec<u8>> = (0..1_000)
        .map(|i| {
            let id = uuid::Uuid::new_v4().to_string();
            let data = match i % 3 {
                0 => serde_json::json!({"sku": format!("sku-{i}"), "price": i as f64 / 7.0, "currency": "EUR"}),
                1 => serde_json::json!({"cause": "lava", "weapon": null, "tags": ["fall", i], "nested": {"a": {"b": true}}}),
                _ => serde_json::json!({"score": i, "seconds": 12.5, "note": "Zoë \\ \"quoted\"\ttab ☃"}),
            };
            let mut record: serde_json::Value = serde_json::from_slice(&event(&id)).expect("json");
            record["event_data"] = data.clone();
            sent.insert(id, data);
            serde_json::to_vec(&record).expect("json")
        })
        .collect();
    stack::put_spread(&aws, resources.name("TELEMETRY_STREAM"), &records).await;

    let mut env = resources.env();
    env.extend_from_slice(&[
        ("BATCH_MAX_AGE_SECS", "1"),
        ("LOAD_MAX_AGE_SECS", "1"),
        ("IDLE_BETWEEN_READS_MS", "200"),
        ("METRICS_FLUSH_INTERVAL_SECS", "1"),
        ("WAREHOUSE_URL", &url),
    ]);
    let mut s3_connector = ServiceProcess::start(&workspace_binary("s3-connector"), &env);
    let mut loader = ServiceProcess::start(&workspace_binary("redshift-connector"), &env);
    assert_eq!(wait_for_rows(sql, 1_000, Duration::from_secs(90)).await, 1_000);

    let rows = sql
        .query("SELECT event_id, event_data::text FROM events", &[])
        .await
        .expect("rows");
    // Both sides read from JSON text the same way (serde_json's float parsing is not
    // exact to the last bit without its float_roundtrip feature).
    let as_text = |v: &serde_json::Value| -> serde_json::Value { serde_json::from_str(&v.to_string()).expect("json") };
    for row in &rows {
        let id: String = row.get(0);
        let stored: serde_json::Value = serde_json::from_str(row.get::<_, &str>(1)).expect("JSON");
        assert_eq!(stored, as_text(&sent[&id]), "{id}");
    }
    for service in [&mut loader, &mut s3_connector] {
        service.terminate();
        assert!(service.wait_exit(Duration::from_secs(30)).is_some_and(|s| s.success()));
    }
    resources.delete(&aws).await;
    schema.drop_all().await;
}
