//! A split and a merge while producing: nothing is missed, and for each partition key
//! no record of a child shard is processed before the last record of its parent.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::{Log, assert_one_reader_per_shard, put, start_kinesis, wait_until_delivered};
use pipeline_tests::stack;
use shard_consumer::LeaseTable;
use shard_consumer::position::Checkpoint;

const FAILOVER: Duration = Duration::from_secs(3);
const KEYS: usize = 24;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_and_merge_while_producing_keep_every_key_in_order() {
    let aws = stack::aws().await;
    let stream = stack::unique_name("sc-reshard");
    let table_name = stack::unique_name("sc-leases");
    stack::create_stream(&aws, &stream, 2).await;
    let log = Log::default();
    let workers = [
        start_kinesis(&aws, &stream, &table_name, "w1", FAILOVER, &log),
        start_kinesis(&aws, &stream, &table_name, "w2", FAILOVER, &log),
    ];

    put(&aws, &stream, 0..100, KEYS).await;
    // Split the lower shard in two halves.
    let shards = stack::open_shards(&aws, &stream).await;
    let (lower, start, end) = shards[0].clone();
    aws.kinesis()
        .split_shard()
        .stream_name(&stream)
        .shard_to_split(&lower)
        .new_starting_hash_key((start + (end - start) / 2 + 1).to_string())
        .send()
        .await
        .expect("split");
    stack::wait_stream_active(&aws, &stream).await;
    put(&aws, &stream, 100..200, KEYS).await;

    // Merge the split's upper half with the other original shard (adjacent ranges).
    let shards = stack::open_shards(&aws, &stream).await;
    assert_eq!(shards.len(), 3, "after the split: {shards:?}");
    aws.kinesis()
        .merge_shards()
        .stream_name(&stream)
        .shard_to_merge(&shards[1].0)
        .adjacent_shard_to_merge(&shards[2].0)
        .send()
        .await
        .expect("merge");
    stack::wait_stream_active(&aws, &stream).await;
    put(&aws, &stream, 200..300, KEYS).await;

    let delivered = wait_until_delivered(&log, 300, Duration::from_secs(60)).await;
    let missing: Vec<usize> = (0..300)
        .filter(|i| !delivered.contains(&format!("event-{i}")))
        .collect();
    assert!(missing.is_empty(), "never processed: {missing:?}");
    for worker in workers {
        worker.stop().await;
    }
    assert_one_reader_per_shard(&log, FAILOVER);

    // Per key, the first delivery of each record follows production order: a child
    // shard's records never overtake the parent's.
    let mut first_seen = HashSet::new();
    let mut last_per_key: HashMap<String, usize> = HashMap::new();
    let mut shards_read = HashSet::new();
    for delivery in log.deliveries() {
        shards_read.insert(delivery.shard.clone());
        if !first_seen.insert(delivery.data.clone()) {
            continue;
        }
        let n: usize = delivery.data.trim_start_matches("event-").parse().expect("payload");
        if let Some(previous) = last_per_key.insert(delivery.key.clone(), n) {
            assert!(
                previous < n,
                "{}: event-{n} (shard {}) processed after event-{previous}",
                delivery.key,
                delivery.shard
            );
        }
    }
    // 2 original shards, 2 children of the split, 1 child of the merge.
    assert_eq!(shards_read.len(), 5, "shards read: {shards_read:?}");

    // Parents end at SHARD_END (or are already deleted, once their children started).
    let table = LeaseTable::new(aws.dynamodb(), &table_name);
    let leases = table.list().await.expect("leases");
    let closed = [&lower, &shards[1].0, &shards[2].0];
    for lease in &leases {
        if closed.contains(&&lease.key) {
            assert_eq!(lease.checkpoint, Checkpoint::ShardEnd, "parent lease {}", lease.key);
        }
    }
    stack::delete_stream(&aws, &stream).await;
    stack::delete_table(&aws, &table_name).await;
}
