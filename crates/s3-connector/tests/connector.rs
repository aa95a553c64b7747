//! The connector on the local stack: every record lands in `events/` or `errors/`,
//! one pointer per events file, and a crash between the S3 write and the checkpoint
//! loses nothing.

use pipeline_runtime::clock::now_ms;
use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::time::Duration;

use bytes::Bytes;
use event_model::{FilePointer, RejectedRecord};
use pipeline_runtime::AwsClients;
use pipeline_tests::process::ServiceProcess;
use pipeline_tests::resources::Resources;
use pipeline_tests::stack;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_s3-connector");

fn event(id: &str, ts: i64) -> Vec<u8> {
    serde_json::json!({
        "event_id": id,
        "client_id": uuid::Uuid::new_v4().to_string(),
        "app_name": "SampleGame",
        "event_version": "1.0",
        "event_type": "player_death",
        "event_timestamp": ts,
        "level_id": "level-01",
        "position_x": 10.5,
        "position_y": 3
    })
    .to_string()
    .into_bytes()
}

fn new_events(count: usize) -> Vec<(String, Vec<u8>)> {
    (0..count)
        .map(|_| {
            let id = uuid::Uuid::new_v4().to_string();
            let data = event(&id, now_ms() - 1_000);
            (id, data)
        })
        .collect()
}

/// Every object under `prefix`: key → (gunzipped lines, stored size).
async fn objects(aws: &AwsClients, bucket: &str, prefix: &str) -> HashMap<String, (Vec<String>, usize)> {
    let s3 = aws.s3();
    let mut found = HashMap::new();
    let listing = s3
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .into_paginator()
        .send()
        .collect::<Vec<_>>()
        .await;
    for page in listing {
        let page = page.expect("list objects");
        for object in page.contents() {
            let key = object.key().expect("key").to_string();
            let body = s3
                .get_object()
                .bucket(bucket)
                .key(&key)
                .send()
                .await
                .expect("get object")
                .body
                .collect()
                .await
                .expect("body")
                .into_bytes();
            let mut text = String::new();
            flate2::read::GzDecoder::new(&body[..])
                .read_to_string(&mut text)
                .expect("gzip");
            found.insert(key, (text.lines().map(str::to_string).collect(), body.len()));
        }
    }
    found
}

fn event_ids(objects: &HashMap<String, (Vec<String>, usize)>) -> Vec<String> {
    objects
        .values()
        .flat_map(|(lines, _)| lines.iter())
        .map(|line| {
            let value: Value = serde_json::from_str(line).expect("JSON line");
            assert!(value["server_timestamp"].is_i64(), "{line}");
            value["event_id"].as_str().expect("event_id").to_string()
        })
        .collect()
}

/// Polls until every id in `ids` is in `events/`.
async fn wait_for_events(aws: &AwsClients, bucket: &str, ids: &HashSet<String>, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let seen: HashSet<String> = event_ids(&objects(aws, bucket, "events/").await).into_iter().collect();
        if ids.is_subset(&seen) {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The rejected records in `errors/` and the files' keys, once there are `count`
/// records or at 20 s (rejects are flushed with the same batches as events: the last
/// one can come a moment later).
async fn wait_for_rejects(aws: &AwsClients, bucket: &str, count: usize) -> (Vec<RejectedRecord>, Vec<String>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let errors = objects(aws, bucket, "errors/").await;
        let rejected: Vec<RejectedRecord> = errors
            .values()
            .flat_map(|(lines, _)| lines.iter())
            .map(|line| serde_json::from_str(line).expect("reject line"))
            .collect();
        if rejected.len() >= count || tokio::time::Instant::now() > deadline {
            return (rejected, errors.into_keys().collect());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every pointer on the files stream so far.
async fn pointers(aws: &AwsClients, stream: &str) -> Vec<FilePointer> {
    stack::read_stream(aws, stream)
        .await
        .iter()
        .map(|r| FilePointer::from_json(r.data().as_ref()).expect("pointer"))
        .collect()
}

/// The ids of the events behind the pointers on `files`, once they cover `ids` or at
/// `timeout`.
async fn wait_for_pointers(
    aws: &AwsClients,
    bucket: &str,
    files: &str,
    ids: &HashSet<String>,
    timeout: Duration,
) -> HashSet<String> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let mut covered = HashSet::new();
        for pointer in pointers(aws, files).await {
            covered.extend(event_ids(&objects(aws, bucket, &pointer.key).await));
        }
        if ids.is_subset(&covered) || tokio::time::Instant::now() > deadline {
            return covered;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn start(resources: &Resources, extra: &[(&str, &str)]) -> ServiceProcess {
    let mut env = resources.env();
    env.extend_from_slice(&[
        ("BATCH_MAX_AGE_SECS", "1"),
        ("BATCH_MAX_RECORDS", "1000"),
        ("IDLE_BETWEEN_READS_MS", "200"),
        ("LEASE_FAILOVER_SECS", "3"),
        ("METRICS_FLUSH_INTERVAL_SECS", "1"),
    ]);
    env.extend_from_slice(extra);
    ServiceProcess::start(BIN, &env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_lands_in_events_or_errors_with_one_pointer_per_file() {
    let aws = stack::aws().await;
    let resources = Resources::unique();
    resources.create(&aws).await;
    let (bucket, telemetry, files) = (
        resources.name("BUCKET"),
        resources.name("TELEMETRY_STREAM"),
        resources.name("FILES_STREAM"),
    );

    let plain = new_events(200);
    let aggregated = new_events(50);
    let mut records: Vec<Vec<u8>> = plain.iter().map(|(_, data)| data.clone()).collect();
    for chunk in aggregated.chunks(10) {
        // As the KPL does, an aggregate holds user records of its own shard: here, of
        // the partition key `put_spread` gives the aggregate itself.
        let key = format!("record-{}", records.len());
        let users: Vec<(String, Bytes)> = chunk
            .iter()
            .map(|(_, data)| (key.clone(), Bytes::from(data.clone())))
            .collect();
        records.push(shard_consumer::kpl::aggregate(&users).to_vec());
    }
    let mut corrupt = shard_consumer::kpl::aggregate(&[("x".into(), Bytes::from_static(b"{}"))]).to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 1;
    let future = event(&uuid::Uuid::new_v4().to_string(), now_ms() + 7_200_000);
    let malformed: Vec<(Vec<u8>, &str)> = vec![
        (b"{not json".to_vec(), "malformed_json"),
        (b"".to_vec(), "empty"),
        (b"[1,2,3]".to_vec(), "not_an_object"),
        (vec![b'{', 0xff, 0xfe, b'}'], "invalid_utf8"),
        (
            format!("{{\"event_id\":\"{}\"}}", uuid::Uuid::new_v4()).into_bytes(),
            "missing_field",
        ),
        (
            String::from_utf8(event(&uuid::Uuid::new_v4().to_string(), 1))
                .expect("utf8")
                .replace("player_death", "death\\u0007")
                .into_bytes(),
            "control_characters",
        ),
        (event("not-a-uuid", 1), "invalid_uuid"),
        (future, "future_timestamp"),
        (vec![b'x'; 40_000], "too_large"),
        (corrupt, "kpl_bad_checksum"),
    ];
    records.extend(malformed.iter().map(|(data, _)| data.clone()));
    stack::put_spread(&aws, telemetry, &records).await;

    let mut connector = start(&resources, &[]);
    let valid: HashSet<String> = plain.iter().chain(&aggregated).map(|(id, _)| id.clone()).collect();
    assert!(
        wait_for_events(&aws, bucket, &valid, Duration::from_secs(60)).await,
        "every valid event reaches events/"
    );
    let (rejected, error_keys) = wait_for_rejects(&aws, bucket, malformed.len()).await;
    connector.terminate();
    let status = connector.wait_exit(Duration::from_secs(30)).expect("stops on SIGTERM");
    assert!(status.success(), "{status}");

    let events = objects(&aws, bucket, "events/").await;
    let ids = event_ids(&events);
    assert_eq!(ids.len(), valid.len(), "each valid event exactly once without a crash");
    assert_eq!(ids.into_iter().collect::<HashSet<_>>(), valid);

    let reasons: Vec<&str> = rejected.iter().map(|r| r.reason.as_str()).collect();
    assert_eq!(rejected.len(), malformed.len(), "{reasons:?}");
    for (data, reason) in &malformed {
        let found = rejected
            .iter()
            .find(|r| r.raw().expect("base64") == *data)
            .unwrap_or_else(|| panic!("{reason}: raw bytes not in errors/"));
        assert_eq!(found.reason, *reason, "{} at {}", found.detail, found.sequence);
        assert!(found.arrival > 0 && !found.sequence.is_empty() && found.shard.starts_with("shardId-"));
    }

    let key_layout = |key: &str, prefix: &str| {
        let parts: Vec<&str> = key.split('/').collect();
        parts.len() == 6
            && parts[0] == prefix
            && parts[1..5].iter().all(|p| p.chars().all(|c| c.is_ascii_digit()))
            && parts[5].ends_with(".gzip")
            && parts[5]
                .trim_end_matches(".gzip")
                .split('-')
                .all(|s| s.chars().all(|c| c.is_ascii_digit()))
    };
    assert!(events.keys().all(|k| key_layout(k, "events")), "{:?}", events.keys());
    assert!(error_keys.iter().all(|k| key_layout(k, "errors")), "{error_keys:?}");

    let pointers = pointers(&aws, files).await;
    assert_eq!(pointers.len(), events.len(), "one pointer per events file");
    for pointer in &pointers {
        let (lines, size) = events.get(&pointer.key).expect("the pointer names an events file");
        assert_eq!(pointer.bucket, bucket);
        assert_eq!(pointer.records as usize, lines.len());
        assert_eq!(pointer.bytes as usize, *size);
        assert!(pointer.min_event_timestamp <= pointer.max_event_timestamp);
    }
    let head = aws
        .s3()
        .head_object()
        .bucket(bucket)
        .key(&pointers[0].key)
        .send()
        .await
        .expect("head");
    assert_eq!(head.content_encoding(), Some("gzip"));
    assert_eq!(head.content_type(), Some("application/x-ndjson"));

    let metrics = connector.json_lines();
    assert!(
        metrics
            .iter()
            .any(|l| l["RejectedRecords"].is_number() && l["Reason"] == "kpl_bad_checksum"),
        "rejects are counted by reason"
    );
    resources.delete(&aws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_between_the_s3_write_and_the_checkpoint_loses_nothing() {
    let aws = stack::aws().await;
    let resources = Resources::unique();
    resources.create(&aws).await;
    let (bucket, telemetry, files) = (
        resources.name("BUCKET"),
        resources.name("TELEMETRY_STREAM"),
        resources.name("FILES_STREAM"),
    );
    let mut first = start(&resources, &[("WORKER_ID", "first")]);
    let before = new_events(30);
    stack::put_spread(
        &aws,
        telemetry,
        &before.iter().map(|(_, d)| d.clone()).collect::<Vec<_>>(),
    )
    .await;
    let before_ids: HashSet<String> = before.iter().map(|(id, _)| id.clone()).collect();
    assert!(wait_for_events(&aws, bucket, &before_ids, Duration::from_secs(60)).await);
    // The stream goes only once every earlier batch is published: a pointer still in
    // flight would meet the missing stream, which stops the connector for good.
    let covered = wait_for_pointers(&aws, bucket, files, &before_ids, Duration::from_secs(60)).await;
    assert!(
        before_ids.is_subset(&covered),
        "every batch published before the stream goes"
    );

    // Without its files stream the connector writes to S3 but cannot publish: the
    // missing stream is fatal, so it stops after the S3 write and before the
    // checkpoint, and is killed in exactly that window.
    stack::delete_stream(&aws, files).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while aws
        .kinesis()
        .describe_stream_summary()
        .stream_name(files)
        .send()
        .await
        .is_ok()
    {
        assert!(tokio::time::Instant::now() < deadline, "files stream not deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = new_events(30);
    stack::put_spread(
        &aws,
        telemetry,
        &after.iter().map(|(_, d)| d.clone()).collect::<Vec<_>>(),
    )
    .await;
    let after_ids: HashSet<String> = after.iter().map(|(id, _)| id.clone()).collect();
    let stopped = first.wait_exit(Duration::from_secs(60));
    assert!(
        stopped.is_some_and(|status| !status.success()),
        "a missing files stream stops the connector with an error: {stopped:?}"
    );
    first.kill();
    let in_lake: HashSet<String> = event_ids(&objects(&aws, bucket, "events/").await).into_iter().collect();
    assert!(
        !after_ids.is_disjoint(&in_lake),
        "some batch was written to S3 without its pointer"
    );

    stack::create_stream(&aws, files, 1).await;
    let mut second = start(&resources, &[("WORKER_ID", "second")]);
    // The second worker takes the expired leases, re-reads from the checkpoint and
    // publishes pointers that cover every event of the unfinished batches.
    let covered = wait_for_pointers(&aws, bucket, files, &after_ids, Duration::from_secs(60)).await;
    let missing: Vec<&String> = after_ids.difference(&covered).collect();
    assert!(
        missing.is_empty(),
        "events without a pointer after the restart: {missing:?}"
    );
    let all: HashSet<String> = event_ids(&objects(&aws, bucket, "events/").await).into_iter().collect();
    assert!(
        before_ids.is_subset(&all) && after_ids.is_subset(&all),
        "nothing is missing"
    );
    second.terminate();
    assert!(second.wait_exit(Duration::from_secs(30)).is_some_and(|s| s.success()));
    resources.delete(&aws).await;
}

/// `sample-data/schemas`, put under `schemas/` in `bucket`, as a deployment keeps them.
async fn put_sample_schemas(aws: &AwsClients, bucket: &str) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sample-data/schemas/SampleGame");
    for entry in std::fs::read_dir(&root).expect("sample-data/schemas") {
        let path = entry.expect("entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).expect("name").to_string();
        aws.s3()
            .put_object()
            .bucket(bucket)
            .key(format!("schemas/SampleGame/{name}"))
            .body(std::fs::read(&path).expect("schema").into())
            .send()
            .await
            .expect("put schema");
    }
}

/// An event of `event_type` with `event_data`, as the sample game sends it.
fn game_event(event_type: &str, event_data: Value) -> (String, Vec<u8>) {
    let id = uuid::Uuid::new_v4().to_string();
    let mut event: Value = serde_json::from_slice(&event(&id, now_ms() - 1_000)).expect("json");
    event["event_type"] = event_type.into();
    event["event_data"] = event_data;
    (id, event.to_string().into_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_violations_are_in_errors_with_the_pointer_of_the_failing_field() {
    let aws = stack::aws().await;
    let resources = Resources::unique();
    resources.create(&aws).await;
    let (bucket, telemetry) = (resources.name("BUCKET"), resources.name("TELEMETRY_STREAM"));
    put_sample_schemas(&aws, bucket).await;

    let valid = [
        game_event("player_death", serde_json::json!({"cause": "enemy", "weapon": "bow"})),
        game_event("player_death", serde_json::json!({"cause": "lava", "weapon": null})),
        game_event(
            "purchase",
            serde_json::json!({"sku": "skin-dragon", "price": 9.99, "currency": "EUR"}),
        ),
        game_event("item_pickup", serde_json::json!({"item": "gem", "rarity": "epic"})),
    ];
    // Each breaks its schema in one field: (record, reason, the pointer in the detail).
    let violating = vec![
        (
            game_event(
                "purchase",
                serde_json::json!({"sku": "skin-dragon", "price": "9.99", "currency": "EUR"}),
            ),
            "schema_violation",
            "at /event_data/price: ",
        ),
        (
            game_event("purchase", serde_json::json!({"sku": "skin-dragon", "price": 9.99})),
            "schema_violation",
            "at /event_data/currency: ",
        ),
        (
            game_event("player_death", serde_json::json!({"cause": "enemy"})),
            "schema_violation",
            "at /event_data/weapon: ",
        ),
        (
            game_event("item_pickup", serde_json::json!({"item": "gem", "rarity": "mythic"})),
            "schema_violation",
            "at /event_data/rarity: ",
        ),
        (
            game_event(
                "item_pickup",
                serde_json::json!({"item": "gem", "rarity": "epic", "colour": "red"}),
            ),
            "schema_violation",
            "at /event_data/colour: ",
        ),
        // Strict mode: an event type the game has no schema for.
        (
            game_event("cheat_detected", serde_json::json!({"kind": "speed"})),
            "no_schema",
            "event type \"cheat_detected\"",
        ),
    ];
    let records: Vec<Vec<u8>> = valid
        .iter()
        .map(|(_, data)| data.clone())
        .chain(violating.iter().map(|((_, data), _, _)| data.clone()))
        .collect();
    stack::put_spread(&aws, telemetry, &records).await;

    let schemas = format!("s3://{bucket}/schemas/");
    let mut connector = start(&resources, &[("EVENT_SCHEMAS", &schemas), ("SCHEMA_MODE", "strict")]);
    let valid_ids: HashSet<String> = valid.iter().map(|(id, _)| id.clone()).collect();
    assert!(
        wait_for_events(&aws, bucket, &valid_ids, Duration::from_secs(60)).await,
        "the events that match their schemas reach events/"
    );
    let (rejected, _) = wait_for_rejects(&aws, bucket, violating.len()).await;
    connector.terminate();
    assert!(
        connector
            .wait_exit(Duration::from_secs(30))
            .is_some_and(|s| s.success())
    );

    let in_events: HashSet<String> = event_ids(&objects(&aws, bucket, "events/").await).into_iter().collect();
    assert_eq!(in_events, valid_ids, "only the events that match their schemas");
    assert_eq!(rejected.len(), violating.len());
    for ((_, data), reason, pointer) in &violating {
        let found = rejected
            .iter()
            .find(|r| r.raw().expect("base64") == *data)
            .unwrap_or_else(|| panic!("{reason} {pointer}: raw bytes not in errors/"));
        assert_eq!(found.reason, *reason, "{}", found.detail);
        assert!(found.detail.contains(pointer), "{pointer} not in {}", found.detail);
    }
    let metrics = connector.json_lines();
    assert!(
        metrics
            .iter()
            .any(|l| l["RejectedRecords"].is_number() && l["Reason"] == "schema_violation"),
        "schema violations are counted by reason"
    );
    resources.delete(&aws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_that_does_not_compile_stops_the_connector_at_start_naming_it() {
    let aws = stack::aws().await;
    let resources = Resources::unique();
    resources.create(&aws).await;
    let dir = std::env::temp_dir().join(format!("broken-schemas-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(dir.join("SampleGame")).expect("temp dir");
    std::fs::write(dir.join("SampleGame/purchase.json"), r#"{"type": "money"}"#).expect("write");
    let dir_text = dir.to_str().expect("utf8 path").to_string();
    let mut connector = start(&resources, &[("EVENT_SCHEMAS", &dir_text), ("SCHEMA_MODE", "known")]);
    let (failed, said) = connector.failed_within(Duration::from_secs(30));
    assert!(failed, "{said}");
    assert!(
        said.contains("SampleGame/purchase.json: not a valid JSON Schema"),
        "{said}"
    );
    let _ = std::fs::remove_dir_all(dir);
    resources.delete(&aws).await;
}
