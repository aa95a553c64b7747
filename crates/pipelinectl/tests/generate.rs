//! `generate` on kinesalite: every event arrives (KPL-aggregated when asked), with the
//! injected duplicates and malformed records, and the same seed sends the same game.

use std::process::Command;

use pipeline_tests::stack;
use shard_consumer::SequenceNumber;
use shard_consumer::kinesis::{KinesisRecord, decode_record};

const BIN: &str = env!("CARGO_BIN_EXE_pipelinectl");

fn generate(stream: &str, args: &[&str]) -> String {
    let output = Command::new(BIN)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(stack::service_env())
        .arg("generate")
        .arg(format!("--telemetry-stream={stream}"))
        .args(args)
        .output()
        .expect("run pipelinectl");
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(output.status.success(), "{stderr}");
    stderr
}

async fn user_records(aws: &pipeline_runtime::AwsClients, stream: &str) -> Vec<KinesisRecord> {
    let mut out = Vec::new();
    for record in stack::read_stream(aws, stream).await {
        decode_record(
            SequenceNumber::parse(record.sequence_number()).expect("sequence"),
            record.partition_key().unwrap_or_default(),
            bytes::Bytes::copy_from_slice(record.data().as_ref()),
            0,
            &mut out,
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_arrives_with_the_injected_faults() {
    let aws = stack::aws().await;
    let stream = stack::unique_name("gen");
    stack::create_stream(&aws, &stream, 2).await;
    let summary = generate(
        &stream,
        &[
            "--count=400",
            "--rate=4000",
            "--kpl=10",
            "--duplicates=0.05",
            "--malformed=0.05",
            "--out-of-order=0.05",
            "--seed=9",
        ],
    );
    assert!(summary.contains("sent 400 events"), "{summary}");
    let records = user_records(&aws, &stream).await;
    let duplicates: usize = summary
        .split(" duplicated")
        .next()
        .and_then(|s| s.rsplit('(').next())
        .and_then(|n| n.trim().parse().ok())
        .expect("summary names the duplicates");
    assert_eq!(
        records.len(),
        400 + duplicates,
        "every event and every duplicate arrives"
    );
    assert!(records.iter().all(|r| r.aggregated), "KPL-aggregated");
    let rules = event_model::Rules {
        future_window_ms: i64::MAX / 2,
        ..event_model::Rules::default()
    };
    let invalid = records
        .iter()
        .filter(|r| event_model::Event::parse(&r.data, 0, &rules).is_err())
        .count();
    assert!(invalid > 5 && invalid < 60, "about 5% malformed, got {invalid}");

    // The same seed plays the same game (event ids included).
    let again = stack::unique_name("gen");
    stack::create_stream(&aws, &again, 1).await;
    generate(&again, &["--count=50", "--rate=5000", "--seed=3"]);
    let third = stack::unique_name("gen");
    stack::create_stream(&aws, &third, 1).await;
    generate(&third, &["--count=50", "--rate=5000", "--seed=3"]);
    let ids = |records: Vec<KinesisRecord>| -> Vec<String> {
        records
            .iter()
            .map(|r| serde_json::from_slice::<serde_json::Value>(&r.data).expect("json")["event_id"].to_string())
            .collect()
    };
    assert_eq!(
        ids(user_records(&aws, &again).await),
        ids(user_records(&aws, &third).await)
    );
    for name in [stream, again, third] {
        stack::delete_stream(&aws, &name).await;
    }
}
