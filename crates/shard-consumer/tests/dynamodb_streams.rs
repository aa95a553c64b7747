//! DynamoDB Streams on moto: every change is delivered, and a restart resumes right
//! after the checkpoint (no gap, no re-delivery of checkpointed changes).

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, StreamViewType};
use common::{Log, assert_one_reader_per_shard, config, start};
use pipeline_runtime::AwsClients;
use pipeline_tests::stack;
use shard_consumer::RecordPosition;
use shard_consumer::dynamodb_streams::DynamoDbStreamSource;
use tokio::time::Instant;

const FAILOVER: Duration = Duration::from_secs(3);

async fn put_item(aws: &AwsClients, table: &str, id: usize, version: u32) {
    aws.dynamodb()
        .put_item()
        .table_name(table)
        .item("id", AttributeValue::S(format!("item-{id}")))
        .item("version", AttributeValue::N(version.to_string()))
        .send()
        .await
        .expect("put item");
}

/// Waits until every expected change was delivered; returns what is still missing.
async fn wait_for(log: &Log, expected: &HashSet<String>, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let delivered: HashSet<String> = log.deliveries().into_iter().map(|d| d.data).collect();
        let missing: Vec<String> = expected.difference(&delivered).cloned().collect();
        if missing.is_empty() || Instant::now() > deadline {
            return missing;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_is_delivered_and_a_restart_resumes_after_the_checkpoint() {
    let aws = stack::aws().await;
    let table = stack::unique_name("sc-items");
    let lease_table = stack::unique_name("sc-leases");
    stack::create_table_with_stream(&aws, &table, "id", StreamViewType::NewAndOldImages).await;
    let source = || async {
        DynamoDbStreamSource::for_table(&aws.dynamodb(), aws.dynamodb_streams(), &table)
            .await
            .expect("stream of the table")
    };

    let log = Log::default();
    let worker = start(&aws, source().await, &lease_table, config("w1", FAILOVER), &log);
    let mut expected = HashSet::new();
    for id in 0..20 {
        put_item(&aws, &table, id, 1).await;
        expected.insert(format!("item-{id}:Insert:1"));
    }
    for id in 0..10 {
        put_item(&aws, &table, id, 2).await;
        expected.insert(format!("item-{id}:Modify:2"));
    }
    for id in 10..15 {
        aws.dynamodb()
            .delete_item()
            .table_name(&table)
            .key("id", AttributeValue::S(format!("item-{id}")))
            .send()
            .await
            .expect("delete item");
        expected.insert(format!("item-{id}:Remove:-"));
    }
    let missing = wait_for(&log, &expected, Duration::from_secs(30)).await;
    assert!(missing.is_empty(), "changes never delivered: {missing:?}");
    worker.stop().await;

    // What the first worker checkpointed: its last delivery per shard.
    let before_restart = log.deliveries().len();
    let mut last_before: HashMap<String, RecordPosition> = HashMap::new();
    for delivery in log.deliveries() {
        last_before.insert(delivery.shard.clone(), delivery.position.clone());
    }

    // Changes made while no worker runs are delivered after the restart.
    for id in 20..30 {
        put_item(&aws, &table, id, 1).await;
        expected.insert(format!("item-{id}:Insert:1"));
    }
    let worker = start(&aws, source().await, &lease_table, config("w2", FAILOVER), &log);
    let missing = wait_for(&log, &expected, Duration::from_secs(30)).await;
    assert!(
        missing.is_empty(),
        "changes never delivered after the restart: {missing:?}"
    );
    worker.stop().await;
    assert_one_reader_per_shard(&log, FAILOVER);

    let after_restart = &log.deliveries()[before_restart..];
    assert!(!after_restart.is_empty());
    for delivery in after_restart {
        assert_eq!(delivery.worker, "w2");
        if let Some(checkpointed) = last_before.get(&delivery.shard) {
            assert!(
                delivery.position > *checkpointed,
                "{} at {} was delivered again after a checkpoint at {checkpointed}",
                delivery.data,
                delivery.position
            );
        }
    }
    stack::delete_table(&aws, &table).await;
    stack::delete_table(&aws, &lease_table).await;
}
