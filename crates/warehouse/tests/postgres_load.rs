//! Loads into the local PostgreSQL from batch files in moto's S3: exactly once across
//! replays and duplicates, all-or-nothing when a file is corrupt or missing, with
//! errors that say what they mean; maintenance in UTC whatever the session's time zone.

use event_model::FilePointer;
use pipeline_runtime::error::{Classified, ErrorKind};
use pipeline_runtime::{AwsClients, clock};
use pipeline_tests::stack;
use warehouse::postgres::{PostgresWarehouse, Tls};
use warehouse::{LoadBatch, Maintenance, Warehouse, WarehouseError};

const ARRIVAL: i64 = 1_767_225_600_000;

fn event(id: &str, ts: i64) -> Vec<u8> {
    serde_json::json!({
        "event_id": id,
        "client_id": "0a1b2c3d-4e5f-4a6b-9c7d-8e9fa0b1c2d3",
        "app_name": "SampleGame",
        "event_version": "1.0",
        "event_type": "player_death",
        "event_timestamp": ts,
        "level_id": "it's \"level\" \\ 1",
        "position_x": 1.5,
    })
    .to_string()
    .into_bytes()
}

async fn batch_file(aws: &AwsClients, bucket: &str, key: &str, events: &[Vec<u8>]) -> FilePointer {
    stack::put_batch_file(aws, bucket, key, events, ARRIVAL).await
}

async fn put(aws: &AwsClients, bucket: &str, key: &str, body: Vec<u8>) {
    aws.s3()
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(body.into())
        .send()
        .await
        .expect("put");
}

fn ids(n: usize) -> Vec<String> {
    (0..n).map(|_| uuid::Uuid::new_v4().to_string()).collect()
}

struct Fixture {
    aws: AwsClients,
    bucket: String,
    /// As the loader.
    warehouse: Warehouse,
    /// As maintenance (the cron-connector's user), in the same session time zone.
    maintenance: Warehouse,
    /// As the schema's owner (`pipelinectl`).
    owner: Warehouse,
    sql: tokio_postgres::Client,
}

/// A bucket and a PostgreSQL schema of its own, so tests never see each other's rows.
async fn fixture() -> Fixture {
    fixture_in_time_zone(None).await
}

/// [`fixture`] whose warehouse sessions use the time zone `zone` (as a server or role
/// default would set it).
async fn fixture_in_time_zone(zone: Option<&str>) -> Fixture {
    let aws = stack::aws().await;
    let bucket = stack::unique_name("wh-lake");
    stack::create_bucket(&aws, &bucket).await;
    let schema = stack::warehouse_schema("t").await;
    // The URL's `options` already set the search_path; options are separated by spaces.
    // Loads run as the loader, with only its grants (the schema's owner migrated).
    let in_zone = |url: &str| match zone {
        Some(zone) => format!("{url}%20-cTimeZone%3D{zone}"),
        None => url.to_string(),
    };
    let url = in_zone(&schema.users.loader);
    let maintenance = Warehouse::Postgres(PostgresWarehouse::new(
        &in_zone(&schema.users.maintenance),
        Tls::Disable,
        aws.s3(),
    ));
    let owner = Warehouse::Postgres(PostgresWarehouse::new(&schema.url, Tls::Disable, aws.s3()));
    assert_eq!(
        owner.migrate().await.expect("migrate again"),
        owner.schema_needed(),
        "idempotent"
    );
    let warehouse = Warehouse::Postgres(PostgresWarehouse::new(&url, Tls::Disable, aws.s3()));
    assert_eq!(
        warehouse.check_schema().await.expect("the loader sees the schema"),
        owner.schema_needed()
    );
    let sql = schema.sql;
    Fixture {
        aws,
        bucket,
        warehouse,
        maintenance,
        owner,
        sql,
    }
}

impl Fixture {
    fn batch(&self, files: &[&FilePointer]) -> LoadBatch {
        LoadBatch {
            bucket: self.bucket.clone(),
            files: files.iter().map(|f| (*f).clone()).collect(),
            manifest_key: "manifests/test.manifest".into(),
            reload_loaded_before: None,
        }
    }

    async fn count(&self, query: &str) -> i64 {
        self.sql.query_one(query, &[]).await.expect("count").get(0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loads_are_exactly_once_across_duplicates_and_replays() {
    let f = fixture().await;
    let a_ids = ids(10);
    let a: Vec<Vec<u8>> = a_ids
        .iter()
        .enumerate()
        .map(|(i, id)| event(id, ARRIVAL - 100 + i as i64))
        .collect();
    let file_a = batch_file(&f.aws, &f.bucket, "events/2026/01/01/00/1-10.gzip", &a).await;

    let report = f.warehouse.load(&f.batch(&[&file_a])).await.expect("load a");
    assert_eq!(
        (report.files_loaded, report.rows_staged, report.rows_inserted),
        (1, 10, 10)
    );

    // B: ten new events, two of them sent twice, and three of A's again.
    let b_ids = ids(10);
    let mut b: Vec<Vec<u8>> = b_ids.iter().map(|id| event(id, ARRIVAL - 50)).collect();
    b.push(event(&b_ids[0], ARRIVAL - 50));
    b.push(event(&b_ids[1], ARRIVAL - 50));
    for (i, id) in a_ids.iter().take(3).enumerate() {
        b.push(event(id, ARRIVAL - 100 + i as i64));
    }
    let file_b = batch_file(&f.aws, &f.bucket, "events/2026/01/01/00/11-30.gzip", &b).await;
    let report = f.warehouse.load(&f.batch(&[&file_b])).await.expect("load b");
    assert_eq!(report.rows_staged, 15);
    assert_eq!(report.duplicates_in_batch, 2);
    assert_eq!(report.duplicates_in_table, 3);
    assert_eq!(report.rows_inserted, 10);

    // The same pointers again (a replay after a restart between commit and checkpoint).
    let report = f.warehouse.load(&f.batch(&[&file_a, &file_b])).await.expect("replay");
    assert_eq!((report.files_skipped, report.rows_inserted), (2, 0));

    // A's events rewritten under another key (the s3-connector crashed and cut its
    // batch differently): staged, recognised, not inserted.
    let file_a2 = batch_file(&f.aws, &f.bucket, "events/2026/01/01/00/1-9.gzip", &a).await;
    let report = f.warehouse.load(&f.batch(&[&file_a2])).await.expect("load a2");
    assert_eq!((report.duplicates_in_table, report.rows_inserted), (10, 0));

    assert_eq!(f.count("SELECT COUNT(*) FROM events").await, 20);
    assert_eq!(f.count("SELECT COUNT(DISTINCT event_id) FROM events").await, 20);
    assert_eq!(f.count("SELECT COUNT(*) FROM loaded_files").await, 3);
    let level: String = f
        .sql
        .query_one("SELECT level_id FROM events LIMIT 1", &[])
        .await
        .expect("row")
        .get(0);
    assert_eq!(level, "it's \"level\" \\ 1", "text survives COPY escaping");
    let ts: i64 = f
        .sql
        .query_one(
            "SELECT CAST(EXTRACT(EPOCH FROM server_timestamp) * 1000 AS BIGINT) FROM events LIMIT 1",
            &[],
        )
        .await
        .expect("row")
        .get(0);
    assert_eq!(ts, ARRIVAL, "timestamps are UTC milliseconds");
}

fn event_of(client_id: &str, ts: i64) -> Vec<u8> {
    serde_json::json!({
        "event_id": uuid::Uuid::new_v4().to_string(),
        "client_id": client_id,
        "app_name": "SampleGame",
        "event_version": "1.0",
        "event_type": "player_death",
        "event_timestamp": ts,
    })
    .to_string()
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_player_is_deleted_and_no_load_or_reload_brings_them_back() {
    let f = fixture().await;
    let [gone, kept] = [ids(1).remove(0), ids(1).remove(0)];
    let mut lines: Vec<Vec<u8>> = (0..7).map(|i| event_of(&gone, ARRIVAL - 100 + i)).collect();
    lines.extend((0..5).map(|i| event_of(&kept, ARRIVAL - 100 + i)));
    let file = batch_file(&f.aws, &f.bucket, "events/2026/01/01/00/1-12.gzip", &lines).await;
    f.warehouse.load(&f.batch(&[&file])).await.expect("load");

    let denied = f
        .warehouse
        .forget(std::slice::from_ref(&gone))
        .await
        .expect_err("the loader may not erase");
    assert_eq!(denied.kind(), ErrorKind::Fatal, "{denied}");
    let forgotten = f.owner.forget(std::slice::from_ref(&gone)).await.expect("forget");
    assert_eq!(forgotten.events_deleted, 7);
    let again = f.owner.forget(std::slice::from_ref(&gone)).await.expect("forget again");
    assert_eq!(again.events_deleted, 0);
    assert_eq!(
        f.count("SELECT COUNT(*) FROM forgotten_clients").await,
        1,
        "one tombstone per player"
    );
    let not_an_id = f
        .owner
        .forget(&["x' OR '1'='1".to_string()])
        .await
        .expect_err("refused");
    assert!(matches!(not_an_id, WarehouseError::Refused(_)), "{not_an_id}");

    // A replayed pointer is skipped; a reload (the loader may: it only moves the
    // files' load time) stages the file again and drops their rows.
    let replay = f.warehouse.load(&f.batch(&[&file])).await.expect("replay");
    assert_eq!((replay.files_skipped, replay.rows_inserted), (1, 0));
    let reload = |before: i64| LoadBatch {
        reload_loaded_before: Some(before),
        ..f.batch(&[&file])
    };
    // As if `events` were truncated right after the file was loaded.
    let before = f
        .count("SELECT CAST(EXTRACT(EPOCH FROM MAX(loaded_at)) * 1000 AS BIGINT) + 1 FROM loaded_files")
        .await;
    let report = f.warehouse.load(&reload(before)).await.expect("reload");
    assert_eq!(
        (
            report.rows_staged,
            report.rows_forgotten,
            report.duplicates_in_table,
            report.rows_inserted
        ),
        (12, 7, 5, 0)
    );
    // The same reload again (resumed after a kill) skips what it reloaded.
    let resumed = f.warehouse.load(&reload(before)).await.expect("resume");
    assert_eq!((resumed.files_skipped, resumed.rows_staged), (1, 0));
    // Into an emptied table (loaded_files kept): only the kept player comes back.
    f.sql.batch_execute("TRUNCATE events").await.expect("truncate");
    let truncated = f
        .count("SELECT CAST(EXTRACT(EPOCH FROM MAX(loaded_at)) * 1000 AS BIGINT) + 1 FROM loaded_files")
        .await;
    let report = f
        .warehouse
        .load(&reload(truncated))
        .await
        .expect("reload into an empty table");
    assert_eq!((report.rows_forgotten, report.rows_inserted), (7, 5));
    assert_eq!(
        f.count("SELECT COUNT(*) FROM loaded_files WHERE row_count = 12").await,
        1,
        "recorded once, with its rows"
    );
    let gone_rows: i64 = f
        .sql
        .query_one("SELECT COUNT(*) FROM events WHERE client_id = $1", &[&gone])
        .await
        .expect("count")
        .get(0);
    assert_eq!(gone_rows, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_data_loads_value_equal_into_a_warehouse_migrated_from_before_it_keeping_its_rows() {
    let f = fixture().await;
    // Back to schema version 2 (before event_data), holding a row.
    f.sql
        .batch_execute("DROP TABLE events, loaded_files, forgotten_clients, schema_version")
        .await
        .expect("drop");
    f.sql
        .batch_execute(warehouse::schema::version_table())
        .await
        .expect("version table");
    for (index, statements) in warehouse::schema::migrations(warehouse::Dialect::Postgres)
        .iter()
        .take(2)
        .enumerate()
    {
        for statement in statements {
            f.sql.batch_execute(statement).await.expect("an old migration");
        }
        f.sql
            .batch_execute(&format!("INSERT INTO schema_version VALUES ({}, now())", index + 1))
            .await
            .expect("version");
    }
    f.sql
        .batch_execute(
            "INSERT INTO events (app_name, event_version, event_id, event_type, event_timestamp, server_timestamp, client_id)
             VALUES ('SampleGame', '1.0', '6f1c2a9e-3b4d-4e5f-8a6b-7c8d9e0f1a2b', 'old', now(), now(), '0a1b2c3d-4e5f-4a6b-9c7d-8e9fa0b1c2d3')",
        )
        .await
        .expect("an old row");
    assert!(
        f.warehouse.check_schema().await.is_err(),
        "the loader refuses an old schema"
    );
    assert_eq!(f.owner.migrate().await.expect("migrate"), 3);
    assert_eq!(
        f.count("SELECT COUNT(*) FROM events WHERE event_type = 'old' AND event_data IS NULL")
            .await,
        1
    );

    let sent: Vec<serde_json::Value> = (0..50)
        .map(|i| {
            serde_json::json!({"sku": format!("sword-{i:02}"), "price": 4.99 + f64::from(i), "currency": "EUR",
            "cause": {"weapon": ["axe", i], "note": "Zoë \\ \"quoted\"\ttab"}})
        })
        .collect();
    let lines: Vec<Vec<u8>> = sent
        .iter()
        .enumerate()
        .map(|(i, data)| {
            let mut event: serde_json::Value =
                serde_json::from_slice(&event(&ids(1)[0], ARRIVAL - 100 + i as i64)).expect("json");
            event["event_data"] = data.clone();
            serde_json::to_vec(&event).expect("json")
        })
        .collect();
    let file = batch_file(&f.aws, &f.bucket, "events/2026/01/01/00/ed-1.gzip", &lines).await;
    // (As the owner: dropping the tables took the loader's grants with them.)
    let report = f.owner.load(&f.batch(&[&file])).await.expect("load");
    assert_eq!(report.rows_inserted, 50);
    let rows = f
        .sql
        .query(
            "SELECT event_data::text FROM events WHERE event_data IS NOT NULL ORDER BY event_timestamp",
            &[],
        )
        .await
        .expect("rows");
    let stored: Vec<serde_json::Value> = rows
        .iter()
        .map(|row| serde_json::from_str(row.get::<_, &str>(0)).expect("JSON"))
        .collect();
    // Both sides read from JSON text the same way (serde_json's float parsing is not
    // exact to the last bit without its float_roundtrip feature).
    let sent: Vec<serde_json::Value> =
        serde_json::from_str(&serde_json::to_string(&sent).expect("json")).expect("json");
    assert_eq!(stored, sent, "value-equal to what was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_or_missing_file_fails_the_whole_load_naming_the_file() {
    let f = fixture().await;
    let good = batch_file(&f.aws, &f.bucket, "events/good.gzip", &[event(&ids(1)[0], ARRIVAL)]).await;
    put(&f.aws, &f.bucket, "events/corrupt.gzip", b"this is not gzip".to_vec()).await;
    let corrupt = FilePointer {
        key: "events/corrupt.gzip".into(),
        ..good.clone()
    };
    let error = f
        .warehouse
        .load(&f.batch(&[&good, &corrupt]))
        .await
        .expect_err("a corrupt file fails the load");
    assert!(
        matches!(&error, WarehouseError::File { key, line: None, kind: ErrorKind::Permanent, .. } if key == "events/corrupt.gzip"),
        "{error}"
    );
    assert_eq!(error.file().map(|f| f.key), Some("events/corrupt.gzip"));
    let missing = FilePointer {
        key: "events/missing.gzip".into(),
        ..good.clone()
    };
    let error = f
        .warehouse
        .load(&f.batch(&[&good, &missing]))
        .await
        .expect_err("missing");
    assert!(error.to_string().contains("events/missing.gzip"), "{error}");
    assert_eq!(error.kind(), ErrorKind::Permanent, "{error}");
    assert_eq!(error.file().map(|f| f.key), Some("events/missing.gzip"));
    // A gzipped file whose third line (after an empty one) is not an event.
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut line: serde_json::Value = serde_json::from_slice(&event(&ids(1)[0], ARRIVAL)).expect("json");
    line["server_timestamp"] = ARRIVAL.into();
    let mut text = line.to_string().into_bytes();
    text.extend_from_slice(b"\n\n{\"event_id\": 1}\n");
    std::io::Write::write_all(&mut gzip, &text).expect("gzip");
    put(&f.aws, &f.bucket, "events/bad-line.gzip", gzip.finish().expect("gzip")).await;
    let bad_line = FilePointer {
        key: "events/bad-line.gzip".into(),
        ..good.clone()
    };
    let error = f
        .warehouse
        .load(&f.batch(&[&good, &bad_line]))
        .await
        .expect_err("a bad line");
    let fault = error.file().expect("the file is named");
    assert_eq!((fault.key, fault.line), ("events/bad-line.gzip", Some(3)), "{error}");
    assert!(
        error
            .to_string()
            .contains("events/bad-line.gzip line 3: not an event line"),
        "{error}"
    );
    assert_eq!(
        f.count("SELECT COUNT(*) FROM events").await,
        0,
        "nothing of a failed load stays"
    );
    assert_eq!(f.count("SELECT COUNT(*) FROM loaded_files").await, 0);
    // The connection is usable again after the failure.
    let report = f.warehouse.load(&f.batch(&[&good])).await.expect("load good");
    assert_eq!(report.rows_inserted, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_abandoned_midway_leaves_no_open_transaction_behind() {
    let f = fixture().await;
    let all = ids(2_000);
    let mut files = Vec::new();
    for (n, chunk) in all.chunks(100).enumerate() {
        let events: Vec<Vec<u8>> = chunk.iter().map(|id| event(id, ARRIVAL)).collect();
        files.push(batch_file(&f.aws, &f.bucket, &format!("events/{n}.gzip"), &events).await);
    }
    let pointers: Vec<&FilePointer> = files.iter().collect();
    // Dropped while its transaction is open (a shutdown deadline, a cancelled task).
    let abandoned = tokio::time::timeout(
        std::time::Duration::from_millis(30),
        f.warehouse.load(&f.batch(&pointers)),
    )
    .await;
    assert!(abandoned.is_err(), "the load was still running when it was dropped");
    assert_eq!(f.count("SELECT COUNT(*) FROM events").await, 0);
    let report = f
        .warehouse
        .load(&f.batch(&pointers))
        .await
        .expect("the next load runs in a clean session");
    assert_eq!(report.rows_inserted, all.len() as u64);
    f.warehouse
        .execute("VACUUM events")
        .await
        .expect("no transaction is left open for statements that refuse one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_and_connection_failures_carry_their_kind() {
    let f = fixture().await;
    let error = f
        .warehouse
        .execute("ANALYZE no_such_table")
        .await
        .expect_err("no table");
    assert!(
        matches!(&error, WarehouseError::Statement { sqlstate: Some(s), kind: ErrorKind::Fatal, .. } if s == "42P01"),
        "{error:?}"
    );
    assert!(error.to_string().contains("42P01"), "{error}");
    let error = f
        .warehouse
        .execute("SELECT CAST('x' AS INTEGER)")
        .await
        .expect_err("bad data");
    assert_eq!(error.kind(), ErrorKind::Permanent, "{error}");

    let config: tokio_postgres::Config = stack::warehouse_url().parse().expect("the stack's URL");
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        other => panic!("the stack's warehouse is reached over TCP: {other:?}"),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("pipeline");
    let database = config.get_dbname().unwrap_or("analytics");
    let s3 = f.aws.s3();
    let connect = |settings: String| {
        let warehouse = Warehouse::Postgres(PostgresWarehouse::new(&settings, Tls::Disable, s3.clone()));
        async move { warehouse.migrate().await.expect_err("cannot connect") }
    };
    let wrong_password = connect(format!(
        "host={host} port={port} user={user} password=wrong dbname={database}"
    ))
    .await;
    assert_eq!(wrong_password.kind(), ErrorKind::Fatal, "{wrong_password}");
    let no_database = connect(format!(
        "host={host} port={port} user={user} password={} dbname=no_such_database",
        String::from_utf8_lossy(config.get_password().unwrap_or_default())
    ))
    .await;
    assert_eq!(no_database.kind(), ErrorKind::Fatal, "{no_database}");
    let nobody_listening =
        connect("host=127.0.0.1 port=1 user=pipeline dbname=analytics connect_timeout=5".into()).await;
    assert_eq!(nobody_listening.kind(), ErrorKind::Transient, "{nobody_listening}");
    let not_a_url = connect("postgres://[".into()).await;
    assert_eq!(not_a_url.kind(), ErrorKind::Fatal, "{not_a_url}");
}

/// `2026-01-01 00:00:00.000`, the UTC time of `ms`.
fn utc_text(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .expect("a time")
        .strftime("%Y-%m-%d %H:%M:%S%.3f")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_compares_in_utc_whatever_the_session_time_zone() {
    const DAY_MS: i64 = 86_400_000;
    const HOUR_MS: i64 = 3_600_000;
    // UTC+14 and UTC-10 (-9 in summer): read as local time, a UTC time moves by more
    // than the hour either side of the cut-off that the events are placed at.
    for zone in ["Pacific/Kiritimati", "America/Adak"] {
        let f = fixture_in_time_zone(Some(zone)).await;
        let offset = f
            .warehouse
            .select(&warehouse::query::Query {
                sql: "SELECT CAST(EXTRACT(TIMEZONE FROM now()) AS BIGINT)".into(),
                parameters: Vec::new(),
            })
            .await
            .expect("offset");
        assert_ne!(offset, vec![vec![0]], "{zone}: the session is not in UTC");

        let now = clock::now_ms();
        let (inside, outside) = (ids(1).remove(0), ids(1).remove(0));
        let events = [
            event(&inside, now - 3 * DAY_MS + HOUR_MS),
            event(&outside, now - 3 * DAY_MS - HOUR_MS),
        ];
        let file = stack::put_batch_file(&f.aws, &f.bucket, "events/2026/01/01/00/1-2.gzip", &events, now).await;
        f.warehouse.load(&f.batch(&[&file])).await.expect("load");
        let loaded_at_ms = f
            .count("SELECT CAST(EXTRACT(EPOCH FROM loaded_at) * 1000 AS BIGINT) FROM loaded_files")
            .await;
        assert!(
            (loaded_at_ms - now).abs() < 5 * 60_000,
            "{zone}: loaded_at is UTC, {} ms off",
            loaded_at_ms - now
        );
        for (key, at) in [
            ("kept", now - 3 * DAY_MS + HOUR_MS),
            ("pruned", now - 3 * DAY_MS - HOUR_MS),
        ] {
            f.sql
                .execute(
                    "INSERT INTO loaded_files (file_key, row_count, loaded_at) VALUES ($1, 1, CAST(CAST($2 AS TEXT) AS TIMESTAMP))",
                    &[&key, &utc_text(at)],
                )
                .await
                .expect("insert a loaded file");
        }

        for job in [
            Maintenance::Retention { days: 3 },
            Maintenance::PruneLoadedFiles { days: 3 },
        ] {
            for statement in job.statements(f.maintenance.dialect()) {
                f.maintenance.execute(&statement).await.expect("maintenance");
            }
        }
        let kept: Vec<String> = f
            .sql
            .query("SELECT event_id FROM events", &[])
            .await
            .expect("events")
            .iter()
            .map(|row| row.get(0))
            .collect();
        assert_eq!(
            kept,
            vec![inside],
            "{zone}: the event inside the window stays, the other goes"
        );
        let mut files: Vec<String> = f
            .sql
            .query("SELECT file_key FROM loaded_files", &[])
            .await
            .expect("files")
            .iter()
            .map(|row| row.get(0))
            .collect();
        files.sort();
        assert_eq!(files, vec![file.key.clone(), "kept".to_string()], "{zone}");
    }
}

/// `WAREHOUSE_STATEMENT_TIMEOUT_MS`: the server cancels a statement past it, so a
/// caller that stops waiting (the live page) leaves nothing running behind it.
#[tokio::test]
async fn a_statement_past_warehouse_statement_timeout_is_cancelled_by_the_server() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        warehouse: warehouse::WarehouseArgs,
    }
    let aws = stack::aws().await;
    let schema = stack::warehouse_schema("timeout").await;
    let owner = Warehouse::Postgres(PostgresWarehouse::new(&schema.url, Tls::Disable, aws.s3()));
    owner.migrate().await.expect("migrate");
    let cli = Cli::try_parse_from([
        "test",
        "--warehouse-url",
        schema.users.loader.as_str(),
        "--warehouse-tls=disable",
        "--warehouse-statement-timeout-ms=300",
    ])
    .expect("settings");
    let warehouse = cli
        .warehouse
        .open(aws.s3(), || unreachable!("the postgres back end"))
        .expect("open");
    // Another session holds the table, so the read waits until the server gives up on it.
    schema
        .sql
        .batch_execute("BEGIN; LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");
    let started = std::time::Instant::now();
    let error = warehouse
        .count_events_of(&[uuid::Uuid::new_v4().to_string()])
        .await
        .expect_err("cancelled");
    let waited = started.elapsed();
    schema.sql.batch_execute("ROLLBACK").await.expect("unlock");
    assert!(error.to_string().contains("57014"), "{error}");
    assert!(waited < std::time::Duration::from_secs(5), "{waited:?}");
    let next = warehouse.count_events_of(&[uuid::Uuid::new_v4().to_string()]).await;
    assert_eq!(next.expect("the next statement runs"), 0);

    let malformed = Cli::try_parse_from(["test", "--warehouse-url", "postgres://a:b@host:notaport/db"])
        .expect("settings")
        .warehouse
        .open(aws.s3(), || unreachable!("the postgres back end"));
    let Err(error) = malformed else {
        panic!("a malformed WAREHOUSE_URL opens")
    };
    assert!(error.to_string().starts_with("WAREHOUSE_URL: "), "{error}");
}
