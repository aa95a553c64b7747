//! The local stack answers the AWS SDK for Rust and tokio-postgres for real.

use std::time::Duration;

use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{AttributeValue, StreamViewType};
use aws_sdk_dynamodbstreams::types::ShardIteratorType as StreamIteratorType;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::ShardIteratorType;
use aws_smithy_types::byte_stream::ByteStream;
use pipeline_tests::stack;

#[tokio::test]
async fn kinesis_put_then_get_on_kinesalite() {
    let aws = stack::aws().await;
    let kinesis = aws.kinesis();
    let stream = stack::unique_name("stack-kinesis");
    stack::create_stream(&aws, &stream, 1).await;

    let put = kinesis
        .put_record()
        .stream_name(&stream)
        .partition_key("player-1")
        .data(Blob::new(br#"{"event_type":"level_started"}"#.to_vec()))
        .send()
        .await
        .expect("put record");
    // kinesalite numbers records like real Kinesis: long decimal strings.
    assert!(put.sequence_number().len() >= 20, "sequence {}", put.sequence_number());

    let iterator = kinesis
        .get_shard_iterator()
        .stream_name(&stream)
        .shard_id(put.shard_id())
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await
        .expect("iterator")
        .shard_iterator()
        .expect("an iterator")
        .to_string();
    let records = kinesis
        .get_records()
        .shard_iterator(iterator)
        .send()
        .await
        .expect("get records");
    let record = records.records().first().expect("one record");
    assert_eq!(record.data().as_ref(), br#"{"event_type":"level_started"}"#);
    assert_eq!(record.partition_key(), Some("player-1"));
    assert_eq!(record.sequence_number(), put.sequence_number());
    assert!(record.approximate_arrival_timestamp().is_some());

    stack::delete_stream(&aws, &stream).await;
}

#[tokio::test]
async fn dynamodb_conditional_write_fails_typed_and_the_stream_has_the_change() {
    let aws = stack::aws().await;
    let dynamodb = aws.dynamodb();
    let table = stack::unique_name("stack-ddb");
    stack::create_table_with_stream(&aws, &table, "playerId", StreamViewType::NewAndOldImages).await;

    let put = |level: &str| {
        dynamodb
            .put_item()
            .table_name(&table)
            .item("playerId", AttributeValue::S("p1".into()))
            .item("levelId", AttributeValue::S(level.into()))
            .condition_expression("attribute_not_exists(playerId)")
    };
    put("forest").send().await.expect("first write passes the condition");
    let error = put("desert")
        .send()
        .await
        .expect_err("second write fails the condition");
    assert!(
        matches!(
            error.into_service_error(),
            PutItemError::ConditionalCheckFailedException(_)
        ),
        "the SDK's typed variant, not a message match"
    );

    let stream_arn = dynamodb
        .describe_table()
        .table_name(&table)
        .send()
        .await
        .expect("describe")
        .table()
        .and_then(|t| t.latest_stream_arn())
        .expect("a stream ARN")
        .to_string();
    let streams = aws.dynamodb_streams();
    let description = streams
        .describe_stream()
        .stream_arn(&stream_arn)
        .send()
        .await
        .expect("describe stream");
    let shard_id = description
        .stream_description()
        .and_then(|d| d.shards().first())
        .and_then(|s| s.shard_id())
        .expect("a shard")
        .to_string();
    let iterator = streams
        .get_shard_iterator()
        .stream_arn(&stream_arn)
        .shard_id(&shard_id)
        .shard_iterator_type(StreamIteratorType::TrimHorizon)
        .send()
        .await
        .expect("iterator")
        .shard_iterator()
        .expect("an iterator")
        .to_string();
    let mut images = Vec::new();
    let mut iterator = Some(iterator);
    for _ in 0..20 {
        let Some(current) = iterator.take() else { break };
        let output = streams
            .get_records()
            .shard_iterator(current)
            .send()
            .await
            .expect("get records");
        for record in output.records() {
            if let Some(image) = record.dynamodb().and_then(|d| d.new_image())
                && let Some(aws_sdk_dynamodbstreams::types::AttributeValue::S(level)) = image.get("levelId")
            {
                images.push(level.clone());
            }
        }
        if !images.is_empty() {
            break;
        }
        iterator = output.next_shard_iterator().map(str::to_string);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        images,
        vec!["forest".to_string()],
        "the refused write left no stream record"
    );

    stack::delete_table(&aws, &table).await;
}

#[tokio::test]
async fn s3_put_then_get_on_moto() {
    let aws = stack::aws().await;
    let s3 = aws.s3();
    let bucket = stack::unique_name("stack-s3");
    stack::create_bucket(&aws, &bucket).await;
    let body = b"{\"event_id\":\"1\"}\n".repeat(100);
    s3.put_object()
        .bucket(&bucket)
        .key("events/2026/11/22/08/1-2.gzip")
        .content_type("application/json")
        .body(ByteStream::from(body.clone()))
        .send()
        .await
        .expect("put object");
    let object = s3
        .get_object()
        .bucket(&bucket)
        .key("events/2026/11/22/08/1-2.gzip")
        .send()
        .await
        .expect("get object");
    assert_eq!(object.content_type(), Some("application/json"));
    let read = object.body.collect().await.expect("read body").into_bytes();
    assert_eq!(read.as_ref(), body.as_slice());
    stack::delete_bucket(&aws, &bucket).await;
}

#[tokio::test]
async fn postgres_answers_queries_over_tcp_with_a_password() {
    let (client, connection) = tokio_postgres::connect(&stack::warehouse_url(), tokio_postgres::NoTls)
        .await
        .expect("connect to the local warehouse");
    tokio::spawn(connection);
    let table = stack::unique_name("stack_pg").replace('-', "_");
    client
        .batch_execute(&format!(
            "CREATE TEMPORARY TABLE {table} (event_id text PRIMARY KEY, n bigint)"
        ))
        .await
        .expect("create");
    for (id, n) in [("a", 1_i64), ("b", 2), ("c", 3)] {
        client
            .execute(&format!("INSERT INTO {table} VALUES ($1, $2)"), &[&id, &n])
            .await
            .expect("insert");
    }
    let row = client
        .query_one(&format!("SELECT count(*), sum(n)::bigint FROM {table}"), &[])
        .await
        .expect("query");
    assert_eq!(row.get::<_, i64>(0), 3);
    assert_eq!(row.get::<_, i64>(1), 6);
}
