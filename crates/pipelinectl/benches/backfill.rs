//! `backfill` of 1,000,000 events from the lake into an empty warehouse (moto's S3 and
//! the local PostgreSQL; run `deploy/local/up` and `eval "$(deploy/local/env)"` first):
//! 100 batch files of 10,000 lines in this hour's folder, 5% of the events twice (in a
//! file and across files), loaded in the default batches. Rows per second end to end:
//! listing, S3 reads, gunzip, COPY, dedupe, insert, commit; then the second run, which
//! finds everything loaded. `cargo bench -q -p pipelinectl --bench backfill`.

use std::time::Instant;

use clap::Parser;
use pipeline_runtime::clock::now_ms;
use pipeline_tests::stack;
use pipelinectl::backfill::{self, BackfillArgs};

const FILES: usize = 100;
const LINES_PER_FILE: usize = 10_000;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    backfill: BackfillArgs,
}

#[tokio::main]
async fn main() {
    let aws = stack::aws().await;
    let bucket = stack::unique_name("backfill-bench");
    stack::create_bucket(&aws, &bucket).await;
    let schema = stack::warehouse_schema("backfill_bench").await;
    let warehouse = warehouse::Warehouse::Postgres(warehouse::postgres::PostgresWarehouse::new(
        &schema.url,
        warehouse::postgres::Tls::Disable,
        aws.s3(),
    ));
    warehouse.migrate().await.expect("migrate");

    let writing = Instant::now();
    let mut rng = fastrand::Rng::with_seed(11);
    let arrival = now_ms();
    let mut previous: Vec<Vec<u8>> = Vec::new();
    let mut distinct = 0usize;
    let mut bytes = 0u64;
    for f in 0..FILES {
        let fresh = LINES_PER_FILE - LINES_PER_FILE / 20;
        let mut lines: Vec<Vec<u8>> = (0..fresh)
            .map(|i| {
                stack::random_death(
                    &mut rng,
                    &uuid::Uuid::new_v4().to_string(),
                    arrival - 3_600_000 + (f * LINES_PER_FILE + i) as i64,
                )
            })
            .collect();
        distinct += fresh;
        let again: Vec<Vec<u8>> = (0..LINES_PER_FILE / 20)
            .map(|_| {
                let from = if previous.is_empty() || rng.bool() {
                    &lines
                } else {
                    &previous
                };
                from[rng.usize(..from.len())].clone()
            })
            .collect();
        lines.extend(again);
        let key = event_model::batch_key(
            event_model::BatchKind::Events,
            arrival,
            &format!("{f:06}"),
            &format!("{f:06}"),
        );
        bytes += stack::put_batch_file(&aws, &bucket, &key, &lines, arrival).await.bytes;
        previous = lines;
    }
    let rows = FILES * LINES_PER_FILE;
    println!(
        "wrote {rows} lines ({distinct} distinct events) in {FILES} files, {:.1} MiB gzipped, in {:.1} s",
        bytes as f64 / 1_048_576.0,
        writing.elapsed().as_secs_f64()
    );

    let cli = Cli::parse_from([
        "backfill",
        "--since=2h",
        "--bucket",
        &bucket,
        "--warehouse-url",
        &schema.url,
        "--warehouse-tls=disable",
        "--progress=false",
    ]);
    println!("run | files loaded | skipped | rows staged | inserted | seconds | rows/s");
    for run in 1..=2 {
        let done = backfill::run(&aws.s3(), &warehouse, &cli.backfill)
            .await
            .expect("backfill");
        let secs = done.elapsed.as_secs_f64();
        let r = &done.report;
        println!(
            "{run:>3} | {:>12} | {:>7} | {:>11} | {:>8} | {secs:>7.2} | {:>6.0}",
            r.files_loaded,
            r.files_skipped,
            r.rows_staged,
            r.rows_inserted,
            r.rows_staged as f64 / secs
        );
        if run == 1 {
            assert_eq!(r.rows_inserted as usize, distinct, "exactly the distinct events");
            println!(
                "backfill: {:.0} rows/s ({rows} rows in {secs:.1} s)",
                rows as f64 / secs
            );
        } else {
            assert_eq!(r.rows_inserted, 0, "the second run adds nothing");
        }
    }
    schema.drop_all().await;
    stack::delete_bucket(&aws, &bucket).await;
}
