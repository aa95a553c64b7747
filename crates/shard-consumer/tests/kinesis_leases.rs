//! Lease balancing, at-least-once delivery and graceful handover on kinesalite + moto.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{
    Log, Worker, assert_one_reader_per_shard, config, owners, put, start_kinesis, start_with_metrics,
    wait_until_delivered,
};
use pipeline_runtime::Metrics;
use pipeline_tests::stack;
use shard_consumer::LeaseTable;
use shard_consumer::kinesis::KinesisSource;

const FAILOVER: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_share_six_shards_and_hand_over_on_stop() {
    let aws = stack::aws().await;
    let stream = stack::unique_name("sc-balance");
    let table_name = stack::unique_name("sc-leases");
    stack::create_stream(&aws, &stream, 6).await;
    put(&aws, &stream, 0..60, 1000).await;

    let log = Log::default();
    let mut workers: Vec<(String, Worker)> = ["w1", "w2", "w3"]
        .into_iter()
        .map(|w| {
            (
                w.to_string(),
                start_kinesis(&aws, &stream, &table_name, w, FAILOVER, &log),
            )
        })
        .collect();
    let table = LeaseTable::new(aws.dynamodb(), &table_name);

    // Within 3 x failover: every shard has one owner and each worker holds two.
    let deadline = tokio::time::Instant::now() + FAILOVER * 3;
    let balanced = loop {
        let owners = owners(&table).await;
        let mut load: HashMap<String, usize> = HashMap::new();
        for owner in owners.values().flatten() {
            *load.entry(owner.clone()).or_default() += 1;
        }
        let ok = owners.len() == 6
            && owners.values().all(Option::is_some)
            && load.len() == 3
            && load.values().all(|n| *n == 2);
        if ok || tokio::time::Instant::now() > deadline {
            break (ok, owners);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(balanced.0, "not balanced within 3 x failover: {:?}", balanced.1);

    put(&aws, &stream, 60..120, 1000).await;
    let distinct = wait_until_delivered(&log, 120, Duration::from_secs(20)).await;
    assert_eq!(distinct.len(), 120, "every record is processed at least once");

    // A graceful stop releases the leases; the others take them within one taker pass.
    let (stopped_id, stopped) = workers.remove(0);
    stopped.stop().await;
    let released_at = tokio::time::Instant::now();
    let taken = loop {
        let owners = owners(&table).await;
        let ok = owners.values().all(|o| o.as_ref().is_some_and(|o| *o != stopped_id));
        if ok || released_at.elapsed() > FAILOVER {
            break (ok, owners);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        taken.0,
        "released leases not taken before they could have expired: {:?}",
        taken.1
    );

    put(&aws, &stream, 120..150, 1000).await;
    let distinct = wait_until_delivered(&log, 150, Duration::from_secs(20)).await;
    assert_eq!(distinct.len(), 150, "records after the handover are processed");

    for (_, worker) in workers {
        worker.stop().await;
    }
    assert_one_reader_per_shard(&log, FAILOVER);
    let after_stop = owners(&table).await;
    assert!(
        after_stop.values().all(Option::is_none),
        "every lease is released: {after_stop:?}"
    );
    stack::delete_stream(&aws, &stream).await;
    stack::delete_table(&aws, &table_name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_shards_are_taken_within_two_failover_times() {
    let aws = stack::aws().await;
    let stream = stack::unique_name("sc-kill");
    let table_name = stack::unique_name("sc-leases");
    stack::create_stream(&aws, &stream, 2).await;
    put(&aws, &stream, 0..20, 1000).await;
    let log = Log::default();
    let victim = start_kinesis(&aws, &stream, &table_name, "victim", FAILOVER, &log);
    assert_eq!(wait_until_delivered(&log, 20, Duration::from_secs(20)).await.len(), 20);
    let survivor = start_kinesis(&aws, &stream, &table_name, "survivor", FAILOVER, &log);
    // Killed: no release, no flush (aborting drops the worker and its readers).
    victim.task.abort();
    let killed_at = tokio::time::Instant::now();
    let table = LeaseTable::new(aws.dynamodb(), &table_name);
    let taken = loop {
        let owners = owners(&table).await;
        let ok = owners.values().all(|o| o.as_deref() == Some("survivor"));
        if ok || killed_at.elapsed() > FAILOVER * 2 + Duration::from_secs(1) {
            break (ok, owners);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(taken.0, "not taken over within 2 x failover: {:?}", taken.1);
    put(&aws, &stream, 20..40, 1000).await;
    assert_eq!(wait_until_delivered(&log, 40, Duration::from_secs(20)).await.len(), 40);
    survivor.stop().await;
    assert_one_reader_per_shard(&log, FAILOVER);
    stack::delete_stream(&aws, &stream).await;
    stack::delete_table(&aws, &table_name).await;
}

/// A shared buffer the metrics are written to.
#[derive(Clone, Default)]
struct Written(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Written {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_task_that_panics_gives_up_its_lease_and_is_counted() {
    let aws = stack::aws().await;
    let stream = stack::unique_name("sc-panic");
    let table_name = stack::unique_name("sc-leases");
    stack::create_stream(&aws, &stream, 1).await;
    put(&aws, &stream, 0..20, 5).await;
    let log = Log::default();
    *log.panic_on.lock().expect("lock") = Some("event-7".into());
    let written = Written::default();
    let metrics = Metrics::with_sink("Test", "shard-consumer", Box::new(written.clone()));
    let worker = start_with_metrics(
        &aws,
        KinesisSource::new(aws.kinesis(), &stream),
        &table_name,
        config("w1", FAILOVER),
        &log,
        metrics.clone(),
    );
    // The lease is given up at once, not left renewed with no reader: its owner is
    // cleared well within a failover time.
    let table = LeaseTable::new(aws.dynamodb(), &table_name);
    let panicked = tokio::time::Instant::now() + Duration::from_secs(20);
    while log.panic_on.lock().expect("lock").is_some() {
        assert!(
            tokio::time::Instant::now() < panicked,
            "the processor never met event-7"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadline = tokio::time::Instant::now() + FAILOVER / 2;
    let released = loop {
        if owners(&table).await.values().all(Option::is_none) {
            break true;
        }
        if tokio::time::Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(released, "the panicked shard's lease was released at once");
    // The worker leaves the shard to others for a while; a second worker reads it on.
    let other = start_kinesis(&aws, &stream, &table_name, "w2", FAILOVER, &log);
    let delivered = wait_until_delivered(&log, 20, FAILOVER * 2).await;
    assert_eq!(delivered.len(), 20, "every record after the panic too");
    assert!(!worker.task.is_finished(), "the worker lives on");
    assert!(
        log.deliveries().iter().any(|d| d.worker == "w2" && d.data == "event-7"),
        "the other worker took the shard over"
    );
    other.stop().await;
    metrics.flush().expect("flush");
    let text = String::from_utf8(written.0.lock().expect("lock").clone()).expect("utf8");
    assert!(text.contains("ShardTaskPanics"), "the panic is counted: {text}");
    worker.stop().await;
    stack::delete_stream(&aws, &stream).await;
    stack::delete_table(&aws, &table_name).await;
}
