//! The heat map on a warehouse of 1,000,000 events (local PostgreSQL; run
//! `deploy/local/up` and `eval "$(deploy/local/env)"` first): seconds from the query
//! to the written PNG, and to the CSV. `cargo bench -p pipelinectl --bench heatmap`.

use std::path::PathBuf;
use std::time::Instant;

use pipeline_runtime::clock::now_ms;
use pipeline_tests::stack;
use pipelinectl::heatmap::{self, HeatmapSpec, Output, When};
use warehouse::Warehouse;
use warehouse::postgres::{PostgresWarehouse, Tls};

const EVENTS: u64 = 1_000_000;
const RUNS: usize = 5;

#[tokio::main]
async fn main() {
    let aws = stack::aws().await;
    let schema = stack::warehouse_schema("heatmap_bench").await;
    let warehouse = Warehouse::Postgres(PostgresWarehouse::new(&schema.url, Tls::Disable, aws.s3()));
    warehouse.migrate().await.expect("migrate");
    let seeding = Instant::now();
    let now_s = now_ms() / 1000;
    // A week of play on 20 levels; a third of the events are deaths, clustered.
    schema
        .sql
        .batch_execute(&format!(
            "INSERT INTO events SELECT 'SampleGame', '2.3.1', '1.0', md5(i::text)::uuid::text,
                CASE WHEN i % 3 = 0 THEN 'player_death' ELSE 'item_pickup' END,
                to_timestamp({now_s} - (i::bigint * 604800 / {EVENTS})) AT TIME ZONE 'UTC', to_timestamp({now_s}) AT TIME ZONE 'UTC',
                md5((i % 5000)::text)::uuid::text, 'level-' || lpad((i % 20 + 1)::text, 2, '0'),
                LEAST(GREATEST(200 + (i % 7) * 90 + (random() - 0.5) * 80, 0), 1000),
                LEAST(GREATEST(150 + (i % 5) * 90 + (random() - 0.5) * 80, 0), 700)
             FROM generate_series(1, {EVENTS}) AS i;
             ANALYZE events"
        ))
        .await
        .expect("seed");
    println!("seeded {EVENTS} events in {:.1} s", seeding.elapsed().as_secs_f64());

    let dir = std::env::temp_dir().join(format!("heatmap-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let spec = |format: Output, output: PathBuf| HeatmapSpec {
        level: "level-03".into(),
        event_type: "player_death".into(),
        since: When(now_ms() - 8 * 86_400_000),
        until: When(now_ms()),
        grid: (50, 35),
        map_width: 1000.0,
        map_height: 700.0,
        background: None,
        image_width: 1000,
        filters: Vec::new(),
        format,
        output,
    };
    println!("format | run | events in the map | seconds");
    for (format, name) in [(Output::Png, "heatmap.png"), (Output::Csv, "heatmap.csv")] {
        let mut times = Vec::new();
        for run in 0..RUNS {
            let started = Instant::now();
            let drawn = heatmap::run(&warehouse, &spec(format, dir.join(name)))
                .await
                .expect("heatmap");
            let secs = started.elapsed().as_secs_f64();
            println!("{format:?} | {run} | {} | {secs:.3}", drawn.events);
            times.push(secs);
        }
        times.sort_by(f64::total_cmp);
        println!(
            "{format:?}: median {:.3} s, worst {:.3} s over {RUNS} runs on {EVENTS} events (target < 2 s)",
            times[RUNS / 2],
            times[RUNS - 1]
        );
    }
    schema.drop_all().await;
    let _ = std::fs::remove_dir_all(dir);
}
