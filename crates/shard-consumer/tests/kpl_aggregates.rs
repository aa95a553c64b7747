//! KPL aggregates made by the real producer-side library (`aws-kinesis-agg` from PyPI,
//! installed in the stack's venv) come out as their user records; a corrupt one comes
//! out whole, marked invalid, never dropped.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use aws_sdk_kinesis::primitives::Blob;
use common::{Log, start_kinesis, wait_until_delivered};
use pipeline_tests::stack;

/// Aggregates each line of `pk<TAB>ehk-or-dash<TAB>data` groups (separated by blank
/// lines) and prints one `pk<TAB>ehk-or-dash<TAB>hex` line per aggregate.
const AGGREGATE_PY: &str = r#"
import sys
from aws_kinesis_agg.aggregator import RecordAggregator
for group in sys.stdin.read().strip().split("\n\n"):
    agg = RecordAggregator()
    for line in group.split("\n"):
        pk, ehk, data = line.split("\t")
        assert agg.add_user_record(pk, data.encode(), None if ehk == "-" else ehk) is None
    pk, ehk, blob = agg.clear_and_get().get_contents()
    print("%s\t%s\t%s" % (pk, ehk or "-", blob.hex()))
"#;

struct Aggregate {
    partition_key: String,
    explicit_hash_key: Option<String>,
    blob: Vec<u8>,
}

/// Runs the Python aggregator on groups of (partition key, explicit hash key, data).
fn aggregate_with_python(groups: &[Vec<(String, Option<String>, String)>]) -> Vec<Aggregate> {
    let python = stack::python();
    let mut child = Command::new(&python)
        .args(["-c", AGGREGATE_PY])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e} (run deploy/local/up)", python.display()));
    let input: Vec<String> = groups
        .iter()
        .map(|group| {
            group
                .iter()
                .map(|(pk, ehk, data)| format!("{pk}\t{}\t{data}", ehk.as_deref().unwrap_or("-")))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect();
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.join("\n\n").as_bytes())
        .expect("write");
    let output = child.wait_with_output().expect("python aggregator");
    assert!(output.status.success(), "aggregator failed: {output:?}");
    String::from_utf8(output.stdout)
        .expect("utf-8")
        .lines()
        .map(|line| {
            let mut fields = line.split('\t');
            let (pk, ehk, hex) = (
                fields.next().expect("pk"),
                fields.next().expect("ehk"),
                fields.next().expect("hex"),
            );
            Aggregate {
                partition_key: pk.to_string(),
                explicit_hash_key: (ehk != "-").then(|| ehk.to_string()),
                blob: (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
                    .collect(),
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_kpl_aggregates_come_out_as_their_user_records() {
    let aws = stack::aws().await;
    let stream = stack::unique_name("sc-kpl");
    let table = stack::unique_name("sc-leases");
    stack::create_stream(&aws, &stream, 1).await;

    let hash_key = "170141183460469231731687303715884105728".to_string();
    let groups: Vec<Vec<(String, Option<String>, String)>> = (0..3)
        .map(|g| {
            (0..4 + g)
                .map(|i| {
                    let ehk = (i == 1).then(|| hash_key.clone());
                    (format!("pk-{}", i % 3), ehk, format!("g{g}-r{i}"))
                })
                .collect()
        })
        .collect();
    let aggregates = aggregate_with_python(&groups);
    assert_eq!(aggregates.len(), 3);
    let mut corrupt = aggregates[0].blob.clone();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff; // the MD5 trailer no longer matches

    let put = |partition_key: String, explicit_hash_key: Option<String>, data: Vec<u8>| {
        aws.kinesis()
            .put_record()
            .stream_name(&stream)
            .partition_key(partition_key)
            .set_explicit_hash_key(explicit_hash_key)
            .data(Blob::new(data))
            .send()
    };
    for aggregate in &aggregates {
        put(
            aggregate.partition_key.clone(),
            aggregate.explicit_hash_key.clone(),
            aggregate.blob.clone(),
        )
        .await
        .expect("put aggregate");
    }
    put("plain".into(), None, b"plain".to_vec()).await.expect("put plain");
    put("corrupt".into(), None, corrupt.clone()).await.expect("put corrupt");

    let log = Log::default();
    let worker = start_kinesis(&aws, &stream, &table, "w1", Duration::from_secs(3), &log);
    let expected = 4 + 5 + 6 + 2;
    let delivered = wait_until_delivered(&log, expected, Duration::from_secs(30)).await;
    worker.stop().await;
    assert_eq!(delivered.len(), expected, "{delivered:?}");

    let deliveries = log.deliveries();
    for (g, group) in groups.iter().enumerate() {
        let records: Vec<_> = deliveries
            .iter()
            .filter(|d| d.data.starts_with(&format!("g{g}-")))
            .collect();
        assert_eq!(records.len(), group.len(), "group {g}");
        for (i, ((pk, ehk, data), record)) in group.iter().zip(&records).enumerate() {
            assert_eq!(&record.data, data);
            assert_eq!(&record.key, pk, "{data}");
            assert_eq!(&record.explicit_hash_key, ehk, "{data}");
            assert_eq!(record.position.subsequence, i as u64, "{data}");
            assert_eq!(
                record.position.sequence, records[0].position.sequence,
                "one Kinesis record"
            );
            assert!(record.invalid.is_none());
        }
    }
    let plain = deliveries.iter().find(|d| d.data == "plain").expect("plain record");
    assert_eq!((plain.position.subsequence, plain.invalid.as_deref()), (0, None));
    let invalid = deliveries.iter().find(|d| d.key == "corrupt").expect("corrupt record");
    assert_eq!(invalid.data, String::from_utf8_lossy(&corrupt));
    assert!(
        invalid.invalid.as_deref().is_some_and(|r| r.contains("checksum")),
        "{invalid:?}"
    );
    stack::delete_stream(&aws, &stream).await;
    stack::delete_table(&aws, &table).await;
}
