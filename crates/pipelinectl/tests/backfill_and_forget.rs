//! `backfill` and `forget` on the local stack, with the services writing the lake:
//! a backfill into an emptied `events` table restores exactly the distinct valid events
//! sent, and adds nothing when run again; `forget` removes a player from the warehouse,
//! PlayerState and the lake while every other player's line stays byte for byte, and
//! neither their new events, a pointer replay nor a backfill brings them back.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::time::Duration;

use pipeline_runtime::AwsClients;
use pipeline_runtime::clock::now_ms;
use pipeline_tests::process::{ServiceProcess, run_command, workspace_binary};
use pipeline_tests::resources::Resources;
use pipeline_tests::stack::{self, WarehouseSchema};
use pipeline_tests::wait::eventually;

const BIN: &str = env!("CARGO_BIN_EXE_pipelinectl");

fn event(client_id: &str, level: u32) -> Vec<u8> {
    serde_json::json!({
        "event_id": uuid::Uuid::new_v4().to_string(),
        "client_id": client_id,
        "app_name": "SampleGame",
        "event_version": "1.0",
        "event_type": "player_death",
        "event_timestamp": now_ms() - 5_000,
        "level_id": format!("level-{level:02}"),
        "position_x": 3.5,
    })
    .to_string()
    .into_bytes()
}

/// A valid event of each player per round, every tenth sent twice, and records the
/// lake keeps under `errors/`: one that names a player (an event without an id) and
/// one that names nobody. Keyed by player, as a game sends them: one player's records
/// on one shard (moto's DynamoDB does not serialize concurrent writes to one item, as
/// DynamoDB does, so one player's events on two shards would make it count them twice).
fn telemetry(players: &[String], rounds: u32) -> Vec<(String, Vec<u8>)> {
    let mut records = Vec::new();
    for round in 0..rounds {
        for (p, player) in players.iter().enumerate() {
            let record = (player.clone(), event(player, (round + p as u32) % 4));
            if round % 10 == 0 {
                records.push(record.clone());
            }
            records.push(record);
        }
    }
    for player in players {
        let broken = format!(r#"{{"client_id": "{player}", "event_type": "broken"}}"#).into_bytes();
        records.push((player.clone(), broken));
        records.push((player.clone(), b"{not json".to_vec()));
    }
    records
}

/// The stack with the lake-writing services: resources, a warehouse schema, and the
/// connectors (and the player-state-worker, when asked) running on them.
struct Pipeline {
    aws: AwsClients,
    resources: Resources,
    schema: WarehouseSchema,
    services: Vec<ServiceProcess>,
}

impl Pipeline {
    async fn start(with_player_state: bool) -> Self {
        let aws = stack::aws().await;
        let resources = Resources::unique();
        resources.create(&aws).await;
        let schema = stack::warehouse_schema("backfill").await;
        let mut pipeline = Pipeline {
            aws,
            resources,
            schema,
            services: Vec::new(),
        };
        pipeline.start_service("s3-connector");
        pipeline.start_service("redshift-connector");
        if with_player_state {
            pipeline.start_service("player-state-worker");
        }
        pipeline
    }

    fn start_service(&mut self, name: &str) {
        let mut env = self.resources.env();
        env.extend_from_slice(&[
            ("BATCH_MAX_AGE_SECS", "1"),
            ("BATCH_MAX_RECORDS", "40"),
            ("LOAD_MAX_AGE_SECS", "1"),
            ("LOAD_MAX_FILES", "3"),
            ("IDLE_BETWEEN_READS_MS", "200"),
            ("LEASE_FAILOVER_SECS", "3"),
            ("METRICS_FLUSH_INTERVAL_SECS", "1"),
            ("WAREHOUSE_URL", &self.schema.users.loader),
        ]);
        self.services.push(ServiceProcess::start(&workspace_binary(name), &env));
    }

    fn bucket(&self) -> &str {
        self.resources.name("BUCKET")
    }

    /// Runs pipelinectl as the warehouse's owner.
    fn pipelinectl(&self, args: &[&str]) -> (Option<i32>, String) {
        let mut env = self.resources.env();
        env.extend_from_slice(&[
            ("WAREHOUSE_URL", self.schema.url.as_str()),
            ("BACKFILL_PROGRESS", "false"),
        ]);
        env.extend_from_slice(&[("FORGET_PROGRESS", "false"), ("LOG_LEVEL", "error")]);
        run_command(BIN, &env, args)
    }

    async fn count(&self, query: &str) -> i64 {
        self.schema
            .sql
            .query_one(query, &[])
            .await
            .map(|r| r.get(0))
            .unwrap_or(-1)
    }

    async fn rows_of(&self, client_id: &str) -> i64 {
        self.schema
            .sql
            .query_one("SELECT COUNT(*) FROM events WHERE client_id = $1", &[&client_id])
            .await
            .map(|r| r.get(0))
            .unwrap_or(-1)
    }

    async fn event_ids(&self) -> BTreeSet<String> {
        let rows = self
            .schema
            .sql
            .query("SELECT event_id FROM events", &[])
            .await
            .expect("ids");
        rows.iter().map(|row| row.get::<_, String>(0)).collect()
    }

    /// Waits until `query` answers `want`; returns the last answer.
    async fn wait_for(&self, query: &str, want: i64) -> i64 {
        eventually(Duration::from_secs(90), || async { self.count(query).await == want }).await;
        self.count(query).await
    }

    /// The object at `key`, read whole.
    async fn get(&self, key: &str) -> Option<bytes::Bytes> {
        let object = self
            .aws
            .s3()
            .get_object()
            .bucket(self.bucket())
            .key(key)
            .send()
            .await
            .ok()?;
        Some(object.body.collect().await.ok()?.into_bytes())
    }

    /// Every batch file under `events/` and `errors/`: key → gunzipped lines.
    async fn lake(&self) -> BTreeMap<String, Vec<String>> {
        let mut files = BTreeMap::new();
        for prefix in ["events/", "errors/"] {
            let listed = self
                .aws
                .s3()
                .list_objects_v2()
                .bucket(self.bucket())
                .prefix(prefix)
                .send()
                .await;
            for object in listed.expect("list").contents() {
                let key = object.key().expect("key").to_string();
                let bytes = self.get(&key).await.expect("get");
                let mut text = String::new();
                // (An object that is not a batch file is the test's own, left out.)
                if flate2::read::MultiGzDecoder::new(&bytes[..])
                    .read_to_string(&mut text)
                    .is_ok()
                {
                    files.insert(key, text.lines().map(str::to_string).collect());
                }
            }
        }
        files
    }

    async fn stop(mut self) {
        for service in &mut self.services {
            service.terminate();
            assert!(service.wait_exit(Duration::from_secs(30)).is_some_and(|s| s.success()));
        }
        self.resources.delete(&self.aws).await;
        self.schema.drop_all().await;
    }
}

/// The event ids of the valid records among `records`.
fn valid_ids(records: &[(String, Vec<u8>)]) -> BTreeSet<String> {
    records
        .iter()
        .filter_map(|(_, r)| serde_json::from_slice::<serde_json::Value>(r).ok())
        .filter_map(|v| v["event_id"].as_str().map(str::to_string))
        .collect()
}

/// The receipt `forget` printed first (a closing message on standard error may follow).
fn receipt_of(out: &str) -> serde_json::Value {
    serde_json::Deserializer::from_str(out)
        .into_iter::<serde_json::Value>()
        .next()
        .and_then(Result::ok)
        .unwrap_or_else(|| panic!("no receipt in: {out}"))
}

fn players(n: usize) -> Vec<String> {
    (0..n).map(|_| uuid::Uuid::new_v4().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_into_an_emptied_events_table_restores_exactly_the_distinct_valid_events() {
    let pipeline = Pipeline::start(false).await;
    let records = telemetry(&players(10), 30);
    let sent = valid_ids(&records);
    stack::put_records(&pipeline.aws, pipeline.resources.name("TELEMETRY_STREAM"), &records).await;
    let total = "SELECT COUNT(*) FROM events";
    assert_eq!(pipeline.wait_for(total, sent.len() as i64).await, sent.len() as i64);

    // The table truncated, loaded_files kept: files loaded before now are loaded again.
    pipeline
        .schema
        .sql
        .batch_execute("TRUNCATE events")
        .await
        .expect("truncate");
    let truncated_at = jiff::Timestamp::now().to_string();
    let reload = ["backfill", "--since=1h", "--reload-loaded-before", &truncated_at];
    let (dry_code, dry) = pipeline.pipelinectl(&[&reload[..], &["--dry-run"]].concat());
    assert_eq!(dry_code, Some(0), "{dry}");
    assert!(dry.contains("0 already loaded"), "{dry}");
    assert_eq!(pipeline.count(total).await, 0, "a dry run loads nothing");
    let (code, out) = pipeline.pipelinectl(&reload);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(pipeline.event_ids().await, sent, "{out}");
    // Again with the same time (as after a kill): every file is skipped, nothing added.
    let (code, again) = pipeline.pipelinectl(&reload);
    assert_eq!(code, Some(0), "{again}");
    assert!(again.contains(" 0 loaded,") && again.contains(" 0 inserted"), "{again}");

    // A rebuilt warehouse: both tables empty.
    pipeline
        .schema
        .sql
        .batch_execute("TRUNCATE events, loaded_files")
        .await
        .expect("truncate");
    let plain = ["backfill", "--since=1h", "--batch-files=2"];
    let (code, out) = pipeline.pipelinectl(&plain);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(pipeline.event_ids().await, sent, "{out}");
    assert_eq!(pipeline.count(total).await, sent.len() as i64, "exactly once: {out}");
    let (code, again) = pipeline.pipelinectl(&plain);
    assert_eq!(code, Some(0), "{again}");
    assert!(again.contains(" 0 inserted"), "{again}");
    assert_eq!(pipeline.count(total).await, sent.len() as i64);

    // A file the warehouse cannot load is set aside and named, the rest loads, exit 1.
    let broken = event_model::batch_key(event_model::BatchKind::Events, now_ms(), "7", "7");
    let fine = event_model::batch_key(event_model::BatchKind::Events, now_ms(), "8", "8");
    let late = event(&players(1)[0], 2);
    stack::put_batch_file(&pipeline.aws, pipeline.bucket(), &fine, &[late], now_ms()).await;
    pipeline
        .aws
        .s3()
        .put_object()
        .bucket(pipeline.bucket())
        .key(&broken)
        .body(b"not gzip".to_vec().into())
        .send()
        .await
        .expect("put");
    let (code, out) = pipeline.pipelinectl(&plain);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!("set aside (not loaded, still in the lake): {broken}")),
        "{out}"
    );
    assert_eq!(
        pipeline.count(total).await,
        sent.len() as i64 + 1,
        "the other file loaded: {out}"
    );
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_removes_a_player_from_every_store_and_nothing_brings_them_back() {
    let pipeline = Pipeline::start(true).await;
    let everyone = players(4);
    let (gone, kept) = (everyone[0].clone(), &everyone[1..]);
    pipeline
        .aws
        .s3()
        .put_bucket_versioning()
        .bucket(pipeline.bucket())
        .versioning_configuration(
            aws_sdk_s3::types::VersioningConfiguration::builder()
                .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .expect("versioning");
    let records = telemetry(&everyone, 20);
    let sent = valid_ids(&records);
    let telemetry_stream = pipeline.resources.name("TELEMETRY_STREAM");
    stack::put_records(&pipeline.aws, telemetry_stream, &records).await;
    let total = "SELECT COUNT(*) FROM events";
    assert_eq!(pipeline.wait_for(total, sent.len() as i64).await, sent.len() as i64);
    let players_table = pipeline.resources.name("PLAYER_STATE_TABLE");
    let levels_table = pipeline.resources.name("LEVEL_STATE_TABLE");
    let player_count = || async {
        let levels = live_state::level_state::read_counts(&pipeline.aws.dynamodb(), levels_table).await;
        levels
            .map(|l| l.iter().map(|c| c.player_count).sum::<i64>())
            .unwrap_or(-1)
    };
    let wait_players = |want: i64| async move {
        eventually(Duration::from_secs(60), || async { player_count().await == want }).await;
        player_count().await
    };
    assert_eq!(wait_players(4).await, 4);
    // What a run interrupted between writing an object anew and deleting the version
    // it replaced leaves: their line only in an old version.
    let left = event_model::quarantine_key("crashed-run", now_ms(), "1", "2");
    for text in [
        format!("{{\"raw\": \"{gone}\"}}\n"),
        "{\"raw\": \"nobody\"}\n".to_string(),
    ] {
        let mut file = event_model::BatchFile::new(6);
        file.buffer().extend_from_slice(text.as_bytes());
        file.line_written();
        let body = file.finish();
        pipeline
            .aws
            .s3()
            .put_object()
            .bucket(pipeline.bucket())
            .key(&left)
            .body(body.into())
            .send()
            .await
            .expect("put");
    }
    let before = pipeline.lake().await;
    let kept_rows = pipeline.count(total).await - pipeline.rows_of(&gone).await;
    // The lake holds the player's events and one rejected record of theirs.
    let mentions = |line: &str, id: &str| {
        line.contains(id) || {
            serde_json::from_str::<event_model::RejectedRecord>(line)
                .ok()
                .and_then(|r| r.raw().ok())
                .is_some_and(|raw| String::from_utf8_lossy(&raw).contains(id))
        }
    };
    assert!(before.keys().any(|k| k.starts_with("errors/")));
    assert!(
        before
            .iter()
            .any(|(k, lines)| k.starts_with("errors/") && lines.iter().any(|l| mentions(l, &gone))),
        "a rejected record of theirs is in errors/"
    );

    // An object that is not gzip, holding their id: named in the receipt, left alone.
    let corrupt = event_model::quarantine_key("not-gzip", now_ms(), "3", "4");
    pipeline
        .aws
        .s3()
        .put_object()
        .bucket(pipeline.bucket())
        .key(&corrupt)
        .body(format!("not gzip, about {gone}").into_bytes().into())
        .send()
        .await
        .expect("put");

    let forget = ["forget", "--client-id", &gone.to_uppercase(), "--since=2h"];
    let (code, out) = pipeline.pipelinectl(&[&forget[..], &["--dry-run"]].concat());
    assert_eq!(code, Some(1), "the unreadable object: {out}");
    let dry = receipt_of(&out);
    assert_eq!(pipeline.lake().await, before, "a dry run changes nothing");
    assert_eq!(pipeline.count(total).await, sent.len() as i64);
    assert!(dry["receipt"].is_null());

    let (code, out) = pipeline.pipelinectl(&forget);
    assert_eq!(code, Some(1), "the unreadable object: {out}");
    let receipt = receipt_of(&out);
    // (Versions a rewrite replaces exist only once it is done.)
    for part in [
        "/warehouse/events_deleted",
        "/lake/objects_searched",
        "/lake/objects_rewritten",
        "/lake/lines_removed",
        "/lake/unreadable",
    ] {
        assert_eq!(
            receipt.pointer(part),
            dry.pointer(part),
            "the dry run said what the run did: {part}"
        );
    }
    let unreadable = receipt["lake"]["unreadable"].as_array().expect("unreadable");
    assert_eq!(unreadable.len(), 1, "{receipt}");
    assert_eq!(unreadable[0]["key"], corrupt.as_str());
    assert_eq!(unreadable[0]["mentions_them"], true);

    // Warehouse: their rows gone, everyone else's there.
    assert_eq!(pipeline.rows_of(&gone).await, 0);
    assert_eq!(pipeline.count(total).await, kept_rows);
    assert_eq!(receipt["warehouse"]["events_deleted"], sent.len() as i64 - kept_rows);
    // PlayerState: their item gone; the level stage counted them out.
    let items = stack::scan_table(&pipeline.aws, players_table).await.expect("scan");
    assert_eq!(items.len(), kept.len());
    assert_eq!(receipt["player_state"]["items_deleted"], 1);
    assert_eq!(wait_players(kept.len() as i64).await, kept.len() as i64);
    // Lake: no line of theirs; every other line as it was, in the same file, in order.
    let after = pipeline.lake().await;
    assert_eq!(after.keys().collect::<Vec<_>>(), before.keys().collect::<Vec<_>>());
    let mut removed = 0;
    for (key, lines) in &before {
        let others: Vec<&String> = lines.iter().filter(|l| !mentions(l, &gone)).collect();
        removed += lines.len() - others.len();
        assert_eq!(after[key].iter().collect::<Vec<_>>(), others, "{key}");
    }
    assert_eq!(receipt["lake"]["lines_removed"], removed as u64);
    let rewritten = receipt["lake"]["objects_rewritten"].as_array().expect("rewritten");
    assert!(!rewritten.is_empty());
    for file in rewritten {
        let key = file["key"].as_str().expect("key");
        let versions = pipeline
            .aws
            .s3()
            .list_object_versions()
            .bucket(pipeline.bucket())
            .prefix(key)
            .send()
            .await
            .expect("versions");
        assert_eq!(versions.versions().len(), 1, "{key}: the replaced version is deleted");
    }
    let old_deleted = receipt["lake"]["old_versions_deleted"]
        .as_array()
        .expect("old versions");
    assert_eq!(old_deleted.len(), rewritten.len() + 1, "{receipt}");
    assert!(
        old_deleted
            .iter()
            .any(|v| v.as_str().is_some_and(|v| v.starts_with(&left)))
    );
    let stored = receipt["receipt"].as_str().expect("stored receipt");
    let receipt_key = stored.trim_start_matches(&format!("s3://{}/", pipeline.bucket()));
    assert!(receipt_key.starts_with("receipts/forget-"), "{stored}");
    let stored_receipt = pipeline.get(receipt_key).await.expect("the receipt is stored");
    let stored_receipt: serde_json::Value = serde_json::from_slice(&stored_receipt).expect("JSON");
    assert_eq!(stored_receipt["lake"], receipt["lake"]);

    // They send again: their new events never reach the warehouse (the tombstone).
    let more: Vec<(String, Vec<u8>)> = everyone.iter().map(|p| (p.clone(), event(p, 1))).collect();
    stack::put_records(&pipeline.aws, telemetry_stream, &more).await;
    let kept_rows = kept_rows + kept.len() as i64;
    assert_eq!(pipeline.wait_for(total, kept_rows).await, kept_rows);
    // A pointer replay into an emptied warehouse, then a backfill: still not them.
    pipeline
        .schema
        .sql
        .batch_execute("TRUNCATE events, loaded_files")
        .await
        .expect("truncate");
    let files_stream = pipeline.resources.name("FILES_STREAM");
    let pointers: Vec<Vec<u8>> = stack::read_stream(&pipeline.aws, files_stream)
        .await
        .iter()
        .map(|r| r.data().as_ref().to_vec())
        .collect();
    stack::put_spread(&pipeline.aws, files_stream, &pointers).await;
    assert_eq!(pipeline.wait_for(total, kept_rows).await, kept_rows);
    let (code, out) = pipeline.pipelinectl(&["backfill", "--since=2h"]);
    assert_eq!(code, Some(0), "{out}");
    pipeline
        .schema
        .sql
        .batch_execute("TRUNCATE events")
        .await
        .expect("truncate");
    let now = jiff::Timestamp::now().to_string();
    let (code, out) = pipeline.pipelinectl(&["backfill", "--since=2h", "--reload-loaded-before", &now]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(", 1 of forgotten players dropped"),
        "their new event is in the lake: {out}"
    );
    assert_eq!(pipeline.rows_of(&gone).await, 0, "{out}");
    assert_eq!(pipeline.count(total).await, kept_rows, "{out}");
    pipeline.stop().await;
}
