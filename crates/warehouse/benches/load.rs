//! Loads with dedupe into the local PostgreSQL (run `deploy/local/up` and
//! `eval "$(deploy/local/env)"` first): 1,000,000 rows already in the table, then
//! batches of 100,000 rows of which 5% are duplicates (half inside the batch, half of
//! the previous batch). Rows per second end to end: S3 read, gunzip, COPY, dedupe,
//! insert, commit. `cargo bench -p warehouse --bench load`.

use pipeline_runtime::clock::now_ms;
use std::time::Instant;

use pipeline_tests::stack;
use warehouse::postgres::{PostgresWarehouse, Tls};
use warehouse::{LoadBatch, Warehouse};

const SEEDED: i64 = 1_000_000;
const BATCH: usize = 100_000;
const FILES_PER_BATCH: usize = 10;
const BATCHES: usize = 3;

#[tokio::main]
async fn main() {
    // BENCH_TRACE=1 prints the load's phases.
    if std::env::var_os("BENCH_TRACE").is_some() {
        let _ = pipeline_runtime::logging::init(pipeline_runtime::config::LogFormat::Text, "warehouse=debug");
    }
    let aws = stack::aws().await;
    let bucket = stack::unique_name("wh-bench");
    stack::create_bucket(&aws, &bucket).await;
    let bench_schema = stack::warehouse_schema("bench").await;
    let (schema, sql) = (&bench_schema.name, &bench_schema.sql);
    let warehouse = Warehouse::Postgres(PostgresWarehouse::new(&bench_schema.url, Tls::Disable, aws.s3()));
    warehouse.migrate().await.expect("migrate");

    let seeding = Instant::now();
    let now_s = now_ms() / 1000;
    sql.batch_execute(&format!(
        "INSERT INTO {schema}.events SELECT 'SampleGame', '2.3.1', '1.0', md5(i::text)::uuid::text, 'player_death',
            to_timestamp({now_s} - i) AT TIME ZONE 'UTC', to_timestamp({now_s} - i) AT TIME ZONE 'UTC',
            md5((i % 5000)::text)::uuid::text, 'level-' || (i % 20), random() * 1000, random() * 700
         FROM generate_series(1, {SEEDED}) AS i;
         ANALYZE {schema}.events"
    ))
    .await
    .expect("seed");
    println!("seeded {SEEDED} rows in {:.1} s", seeding.elapsed().as_secs_f64());

    let mut rng = fastrand::Rng::with_seed(7);
    let mut previous: Vec<Vec<u8>> = Vec::new();
    println!("batch | rows | files | staged | dup in batch | dup in table | inserted | seconds | rows/s");
    let mut total_rows = 0u64;
    let mut total_secs = 0.0;
    for b in 0..BATCHES {
        let base = now_ms() - 3_600_000;
        let mut lines: Vec<Vec<u8>> = (0..BATCH - BATCH / 20)
            .map(|i| {
                let id = uuid::Uuid::new_v4().to_string();
                stack::random_death(&mut rng, &id, base + i as i64 * 30)
            })
            .collect();
        let in_batch: Vec<Vec<u8>> = (0..BATCH / 40)
            .map(|_| lines[rng.usize(..lines.len())].clone())
            .collect();
        lines.extend(in_batch);
        if previous.is_empty() {
            let more: Vec<Vec<u8>> = (0..BATCH / 40)
                .map(|_| lines[rng.usize(..lines.len())].clone())
                .collect();
            lines.extend(more);
        } else {
            let across: Vec<Vec<u8>> = (0..BATCH / 40)
                .map(|_| previous[rng.usize(..previous.len())].clone())
                .collect();
            lines.extend(across);
        }
        rng.shuffle(&mut lines);
        let mut files = Vec::new();
        for (f, chunk) in lines.chunks(BATCH / FILES_PER_BATCH).enumerate() {
            let key = format!("events/bench/{b}-{f}.gzip");
            files.push(stack::put_batch_file(&aws, &bucket, &key, chunk, now_ms()).await);
        }
        let batch = LoadBatch {
            bucket: bucket.clone(),
            files,
            manifest_key: format!("manifests/bench-{b}.manifest"),
            reload_loaded_before: None,
        };
        let started = Instant::now();
        let report = warehouse.load(&batch).await.expect("load");
        let secs = started.elapsed().as_secs_f64();
        total_rows += report.rows_staged;
        total_secs += secs;
        println!(
            "{b:>5} | {:>6} | {:>5} | {:>6} | {:>12} | {:>12} | {:>8} | {secs:>7.2} | {:>8.0}",
            lines.len(),
            FILES_PER_BATCH,
            report.rows_staged,
            report.duplicates_in_batch,
            report.duplicates_in_table,
            report.rows_inserted,
            report.rows_staged as f64 / secs
        );
        previous = lines;
    }
    println!(
        "end to end: {:.0} rows/s over {BATCHES} batches into a table of {}+ rows",
        total_rows as f64 / total_secs,
        SEEDED
    );
    bench_schema.drop_all().await;
    stack::delete_bucket(&aws, &bucket).await;
}
