//! The local AWS stack as the tests see it.
//!
//! Endpoints come from the same env vars the services read (`deploy/local/env`
//! prints them); unset, they default to the stack's fixed ports so a developer can
//! run `cargo nextest run` after `deploy/local/up` without sourcing anything.

use std::time::Duration;

use pipeline_runtime::{AwsArgs, AwsClients};

/// kinesalite's port.
pub const KINESIS_PORT: u16 = 4567;
/// moto server's port (DynamoDB, DynamoDB Streams, S3, CloudWatch).
pub const MOTO_PORT: u16 = 5000;
/// PostgreSQL's port (Redshift's, so connection strings look alike).
pub const POSTGRES_PORT: u16 = 5439;

fn env_or(name: &str, default: String) -> String {
    std::env::var(name).ok().filter(|v| !v.is_empty()).unwrap_or(default)
}

/// Endpoint of kinesalite.
pub fn kinesis_endpoint() -> String {
    env_or("AWS_ENDPOINT_URL_KINESIS", format!("http://127.0.0.1:{KINESIS_PORT}"))
}

/// Endpoint of moto (every service but Kinesis).
pub fn moto_endpoint() -> String {
    env_or("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{MOTO_PORT}"))
}

/// Connection string of the local warehouse.
pub fn warehouse_url() -> String {
    env_or(
        "WAREHOUSE_URL",
        format!("postgres://pipeline:pipeline@127.0.0.1:{POSTGRES_PORT}/analytics"),
    )
}

/// A schema of its own in the local warehouse database, so tests never see each
/// other's tables, created and granted as `pipelinectl setup` does: services connect
/// as the local stack's users (`deploy/local/up`), each with only its grants.
pub struct WarehouseSchema {
    pub name: String,
    /// The owner's URL, whose `search_path` is the schema (setup, and tests' own SQL).
    pub url: String,
    /// The other users' URLs to the schema.
    pub users: WarehouseUsers,
    /// A connection through the owner's URL.
    pub sql: tokio_postgres::Client,
}

/// The URLs the local warehouse's users other than the owner connect with.
#[derive(Debug, Clone)]
pub struct WarehouseUsers {
    /// The redshift-connector's user.
    pub loader: String,
    /// The cron-connector's user (a member of the owner, to VACUUM).
    pub maintenance: String,
    /// `pipelinectl`'s queries.
    pub reader: String,
}

impl WarehouseUsers {
    /// The `WAREHOUSE_URL` of `service`: maintenance for the cron-connector, the loader
    /// for the redshift-connector (and for the services that do not read it).
    pub fn url_for(&self, service: &str) -> &str {
        match service {
            "cron-connector" => &self.maintenance,
            _ => &self.loader,
        }
    }
}

/// The local warehouse's users besides the owner, as `deploy/local/up` creates them.
pub const LOADER_USER: &str = "pipeline_loader";
pub const MAINTENANCE_USER: &str = "pipeline_maintenance";
pub const READER_USER: &str = "pipeline_reader";

/// `url` with another user (the local users' passwords are their names).
pub fn as_user(url: &str, user: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if scheme < at => format!("{}{user}:{user}{}", &url[..scheme + 3], &url[at..]),
        _ => panic!("no user in the warehouse URL {url}"),
    }
}

/// A connection to the local warehouse (`url` may set a `search_path`).
pub async fn connect_warehouse(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to the local warehouse");
    tokio::spawn(connection);
    client
}

impl WarehouseSchema {
    /// Drops the schema and everything in it.
    pub async fn drop_all(self) {
        self.sql
            .batch_execute(&format!("DROP SCHEMA {} CASCADE", self.name))
            .await
            .expect("drop the warehouse schema");
    }
}

/// Creates `<prefix>_<random>` in the local warehouse, with the current schema in it
/// and the loader's and reader's grants.
pub async fn warehouse_schema(prefix: &str) -> WarehouseSchema {
    let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    connect_warehouse(&warehouse_url())
        .await
        .batch_execute(&format!("CREATE SCHEMA {name}"))
        .await
        .expect("create schema");
    let with_schema = |url: String| format!("{url}?options=-csearch_path%3D{name}");
    let url = with_schema(warehouse_url());
    let owner = warehouse::Warehouse::Postgres(warehouse::postgres::PostgresWarehouse::new(
        &url,
        warehouse::postgres::Tls::Disable,
        aws().await.s3(),
    ));
    owner.migrate().await.expect("migrate the warehouse schema");
    owner
        .grant(warehouse::privileges::Grantee::Loader, LOADER_USER)
        .await
        .expect("grant the loader");
    owner
        .grant(warehouse::privileges::Grantee::Reader, READER_USER)
        .await
        .expect("grant the reader");
    let sql = connect_warehouse(&url).await;
    WarehouseSchema {
        users: WarehouseUsers {
            loader: with_schema(as_user(&warehouse_url(), LOADER_USER)),
            maintenance: with_schema(as_user(&warehouse_url(), MAINTENANCE_USER)),
            reader: with_schema(as_user(&warehouse_url(), READER_USER)),
        },
        name,
        url,
        sql,
    }
}

/// The env vars that point a service binary at the local stack.
pub fn service_env() -> Vec<(String, String)> {
    let moto = moto_endpoint();
    vec![
        ("AWS_REGION".into(), env_or("AWS_REGION", "us-east-1".into())),
        ("AWS_ACCESS_KEY_ID".into(), env_or("AWS_ACCESS_KEY_ID", "test".into())),
        (
            "AWS_SECRET_ACCESS_KEY".into(),
            env_or("AWS_SECRET_ACCESS_KEY", "test".into()),
        ),
        ("AWS_ENDPOINT_URL".into(), moto),
        ("AWS_ENDPOINT_URL_KINESIS".into(), kinesis_endpoint()),
        ("S3_FORCE_PATH_STYLE".into(), "true".into()),
        ("WAREHOUSE_URL".into(), warehouse_url()),
        ("WAREHOUSE_TLS".into(), "disable".into()),
        // A developer's real profile must never be used against the emulators.
        ("AWS_PROFILE".into(), String::new()),
        ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
    ]
}

/// AWS settings for the local stack.
pub fn aws_args() -> AwsArgs {
    AwsArgs {
        aws_region: Some(env_or("AWS_REGION", "us-east-1".into())),
        aws_endpoint_url: Some(moto_endpoint()),
        kinesis_endpoint_url: Some(kinesis_endpoint()),
        dynamodb_endpoint_url: None,
        dynamodb_streams_endpoint_url: None,
        s3_endpoint_url: None,
        s3_force_path_style: true,
        aws_connect_timeout_ms: 2_000,
        aws_attempt_timeout_ms: 10_000,
        aws_max_attempts: 3,
    }
}

/// Clients for the local stack, with the emulators' dummy credentials.
pub async fn aws() -> AwsClients {
    for (name, value) in [("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test")] {
        assert!(
            std::env::var_os(name).is_some(),
            "{name} is not set: run the tests through deploy/local/test, or `eval \"$(deploy/local/env)\"` first (the emulators accept {value:?})"
        );
    }
    AwsClients::load(&aws_args())
        .await
        .expect("AWS config for the local stack")
}

/// A name no other test run uses: `prefix-<12 hex digits>`, valid for streams,
/// tables and buckets (lowercase, digits, hyphens).
pub fn unique_name(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &id[..12])
}

/// Creates a Kinesis stream and waits until it is active.
pub async fn create_stream(aws: &AwsClients, name: &str, shards: i32) {
    let kinesis = aws.kinesis();
    kinesis
        .create_stream()
        .stream_name(name)
        .shard_count(shards)
        .send()
        .await
        .expect("create stream");
    wait_stream_active(aws, name).await;
}

/// Waits until a stream is active (after creation or a split or merge).
pub async fn wait_stream_active(aws: &AwsClients, name: &str) {
    let kinesis = aws.kinesis();
    for _ in 0..200 {
        let summary = kinesis
            .describe_stream_summary()
            .stream_name(name)
            .send()
            .await
            .expect("describe stream");
        if summary
            .stream_description_summary()
            .is_some_and(|s| s.stream_status().as_str() == "ACTIVE")
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("stream {name} did not become active");
}

/// The Python of the stack's venv, which also holds the test tools of requirements.txt.
pub fn python() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.local/venv/bin/python")
}

/// Puts `(partition key, data)` records with PutRecords, 500 per call, and asserts
/// that none failed.
pub async fn put_records(aws: &AwsClients, stream: &str, records: &[(String, Vec<u8>)]) {
    for chunk in records.chunks(500) {
        let entries = chunk
            .iter()
            .map(|(key, data)| {
                aws_sdk_kinesis::types::PutRecordsRequestEntry::builder()
                    .partition_key(key)
                    .data(aws_sdk_kinesis::primitives::Blob::new(data.clone()))
                    .build()
                    .expect("entry")
            })
            .collect::<Vec<_>>();
        let output = aws
            .kinesis()
            .put_records()
            .stream_name(stream)
            .set_records(Some(entries))
            .send()
            .await
            .expect("put records");
        assert_eq!(output.failed_record_count(), Some(0), "records failed");
    }
}

/// Puts records spread over the shards (each its own partition key).
pub async fn put_spread(aws: &AwsClients, stream: &str, records: &[Vec<u8>]) {
    let keyed: Vec<(String, Vec<u8>)> = records
        .iter()
        .enumerate()
        .map(|(i, data)| (format!("record-{i}"), data.clone()))
        .collect();
    put_records(aws, stream, &keyed).await;
}

/// Every record on every shard of `stream`, oldest first per shard (for checking what
/// a producer or a service put there).
pub async fn read_stream(aws: &AwsClients, stream: &str) -> Vec<aws_sdk_kinesis::types::Record> {
    let mut records = Vec::new();
    for shard in list_shards(aws, stream).await {
        records.extend(read_shard(aws, stream, shard.shard_id()).await);
    }
    records
}

/// Deletes a Kinesis stream (best effort: the emulator's state is thrown away anyway).
pub async fn delete_stream(aws: &AwsClients, name: &str) {
    let _ = aws.kinesis().delete_stream().stream_name(name).send().await;
}

/// Creates an S3 bucket.
pub async fn create_bucket(aws: &AwsClients, name: &str) {
    aws.s3()
        .create_bucket()
        .bucket(name)
        .send()
        .await
        .expect("create bucket");
}

/// Deletes every object of a bucket, then the bucket (best effort).
pub async fn delete_bucket(aws: &AwsClients, name: &str) {
    let s3 = aws.s3();
    if let Ok(listing) = s3.list_objects_v2().bucket(name).send().await {
        for object in listing.contents() {
            if let Some(key) = object.key() {
                let _ = s3.delete_object().bucket(name).key(key).send().await;
            }
        }
    }
    let _ = s3.delete_bucket().bucket(name).send().await;
}

/// Deletes a DynamoDB table (best effort).
pub async fn delete_table(aws: &AwsClients, name: &str) {
    let _ = aws.dynamodb().delete_table().table_name(name).send().await;
}

/// A valid death event with id `event_id` at `ts` (ms), of one of 5,000 players on one
/// of 20 levels at a random spot: the benchmarks' load.
pub fn random_death(rng: &mut fastrand::Rng, event_id: &str, ts: i64) -> Vec<u8> {
    format!(
        r#"{{"event_id":"{event_id}","client_id":"00000000-0000-4000-8000-{:012}","app_name":"SampleGame","event_version":"1.0","event_type":"player_death","event_timestamp":{ts},"app_version":"2.3.1","level_id":"level-{:02}","position_x":{:.2},"position_y":{:.2}}}"#,
        rng.u32(..5_000),
        rng.u32(..20),
        rng.f64() * 1000.0,
        rng.f64() * 700.0
    )
    .into_bytes()
}

/// Writes `events` (raw telemetry, each valid) as a gzipped batch file at `key`, the
/// way the s3-connector would for records arriving at `arrival_ms`, and returns its
/// pointer.
pub async fn put_batch_file(
    aws: &AwsClients,
    bucket: &str,
    key: &str,
    events: &[Vec<u8>],
    arrival_ms: i64,
) -> event_model::FilePointer {
    let mut file = event_model::BatchFile::new(6);
    for raw in events {
        event_model::Event::parse(raw, arrival_ms, &event_model::Rules::default())
            .expect("a valid event")
            .write_json_line(Some(arrival_ms), file.buffer());
        file.line_written();
    }
    let body = file.finish();
    aws.s3()
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(body.clone().into())
        .send()
        .await
        .expect("put the batch file");
    event_model::FilePointer {
        bucket: bucket.into(),
        key: key.into(),
        records: events.len() as u64,
        bytes: body.len() as u64,
        shard: "shardId-000000000000".into(),
        first_sequence: "1".into(),
        last_sequence: "2".into(),
        min_event_timestamp: 0,
        max_event_timestamp: 0,
    }
}

/// Every item of a DynamoDB table (consistent reads).
pub async fn scan_table(
    aws: &AwsClients,
    table: &str,
) -> Result<Vec<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>>, aws_sdk_dynamodb::Error> {
    let mut items = Vec::new();
    let mut pages = aws
        .dynamodb()
        .scan()
        .table_name(table)
        .consistent_read(true)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        items.extend(page?.items.unwrap_or_default());
    }
    Ok(items)
}

/// A string attribute of an item ("" when absent).
pub fn item_text(
    item: &std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>,
    name: &str,
) -> String {
    item.get(name).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default()
}

/// A number attribute of an item, as an integer (`None` when absent or not one).
pub fn item_number(
    item: &std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>,
    name: &str,
) -> Option<i64> {
    item.get(name).and_then(|v| v.as_n().ok()).and_then(|n| n.parse().ok())
}

/// Records of one shard, oldest first.
pub async fn read_shard(aws: &AwsClients, stream: &str, shard: &str) -> Vec<aws_sdk_kinesis::types::Record> {
    let kinesis = aws.kinesis();
    let mut iterator = kinesis
        .get_shard_iterator()
        .stream_name(stream)
        .shard_id(shard)
        .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon)
        .send()
        .await
        .expect("shard iterator")
        .shard_iterator
        .expect("shard iterator");
    let mut records = Vec::new();
    loop {
        let output = kinesis
            .get_records()
            .shard_iterator(&iterator)
            .send()
            .await
            .expect("get records");
        let empty = output.records().is_empty();
        records.extend(output.records().iter().cloned());
        match output.next_shard_iterator() {
            Some(next) if !empty => iterator = next.to_string(),
            _ => break,
        }
    }
    records
}

/// Every shard of a stream, closed ones included.
pub async fn list_shards(aws: &AwsClients, stream: &str) -> Vec<aws_sdk_kinesis::types::Shard> {
    let mut shards = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let request = match &next {
            Some(token) => aws.kinesis().list_shards().next_token(token),
            None => aws.kinesis().list_shards().stream_name(stream),
        };
        let output = request.send().await.expect("list shards");
        shards.extend(output.shards().iter().cloned());
        match output.next_token() {
            Some(token) => next = Some(token.to_string()),
            None => return shards,
        }
    }
}

/// The open shards of a Kinesis stream as (id, starting hash key, ending hash key), in
/// hash order.
pub async fn open_shards(aws: &AwsClients, stream: &str) -> Vec<(String, u128, u128)> {
    let mut open: Vec<(String, u128, u128)> = list_shards(aws, stream)
        .await
        .iter()
        .filter(|s| {
            s.sequence_number_range()
                .is_some_and(|r| r.ending_sequence_number().is_none())
        })
        .map(|s| {
            let range = s.hash_key_range().expect("hash range");
            (
                s.shard_id().to_string(),
                range.starting_hash_key().parse().expect("hash key"),
                range.ending_hash_key().parse().expect("hash key"),
            )
        })
        .collect();
    open.sort_by_key(|s| s.1);
    open
}

/// Creates an on-demand table with string hash key `key` and a stream of `view`.
pub async fn create_table_with_stream(
    aws: &AwsClients,
    name: &str,
    key: &str,
    view: aws_sdk_dynamodb::types::StreamViewType,
) {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, StreamSpecification,
    };
    aws.dynamodb()
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(key)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("attribute"),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name(key)
                .key_type(KeyType::Hash)
                .build()
                .expect("key"),
        )
        .stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(view)
                .build()
                .expect("stream"),
        )
        .send()
        .await
        .expect("create table");
}
