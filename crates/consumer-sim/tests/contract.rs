//! The simulation's models against the emulators: the same operations on the model and
//! on kinesalite (Kinesis) or moto (DynamoDB Streams, the lease table) give the same
//! answers, so the simulation's streams and lease table behave like the real services
//! wherever the emulators can show it. (What no emulator does, trimming, shard
//! rollover, iterator expiry and lost answers, is the reason the models exist; it is
//! modelled from the services' documentation.)

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, StreamViewType};
use consumer_sim::faults::{FaultRates, Faults, Gate};
use consumer_sim::lease_table::{SimLeaseStore, TableModel};
use consumer_sim::observer::Observer;
use consumer_sim::stream::{Flavor, SimSource, StreamModel, StreamSettings};
use consumer_sim::world::World;
use pipeline_runtime::error::{Classified, ErrorKind};
use pipeline_tests::stack;
use shard_consumer::dynamodb_streams::DynamoDbStreamSource;
use shard_consumer::error::ReadError;
use shard_consumer::kinesis::KinesisSource;
use shard_consumer::lease::Lease;
use shard_consumer::membership::WorkerEntry;
use shard_consumer::{
    Checkpoint, LeaseStore, LeaseTable, RecordPosition, SequenceNumber, Shard, Source, StartPosition, StreamRecord,
};

fn model(flavor: Flavor) -> (SimSource, Arc<Mutex<StreamModel>>, Arc<World>) {
    let world = Arc::new(World::new(1));
    let mut settings = StreamSettings::new(flavor, 1, Duration::ZERO);
    settings.record_gap = None;
    settings.lifecycle_every = None;
    let stream = Arc::new(Mutex::new(StreamModel::new(world.clone(), settings)));
    let source = SimSource {
        stream: stream.clone(),
        world: world.clone(),
        faults: Arc::new(Faults::new(world.clone(), FaultRates::NONE)),
        gate: Gate::default(),
    };
    (source, stream, world)
}

/// What a read from `start` sees, until the shard ends or a read comes back empty.
#[derive(Debug, PartialEq, Eq)]
struct Read {
    /// Positions as indexes into the shard's ledger (its records from TRIM_HORIZON).
    records: Vec<usize>,
    ended: bool,
}

/// A read error by its kind, as the consumer tells them apart.
fn error_name(error: &ReadError) -> &'static str {
    match error {
        ReadError::IteratorExpired => "IteratorExpired",
        ReadError::Trimmed(_) => "Trimmed",
        ReadError::ShardNotFound(_) => "ShardNotFound",
        ReadError::Aws(_) => "Aws",
    }
}

async fn positions<S: Source>(
    source: &S,
    shard: &str,
    start: &StartPosition,
    limit: i32,
) -> Result<(Vec<RecordPosition>, bool), &'static str> {
    let mut iterator = source.shard_iterator(shard, start).await.map_err(|e| error_name(&e))?;
    let mut seen = Vec::new();
    loop {
        let read = source.read(shard, &iterator, limit).await.map_err(|e| error_name(&e))?;
        let empty = read.records.is_empty();
        seen.extend(read.records.iter().map(|r| r.position().clone()));
        match read.next_iterator {
            None => return Ok((seen, true)),
            Some(_) if empty => return Ok((seen, false)),
            Some(next) => iterator = next,
        }
    }
}

/// Reads `shard` from `start`, naming records by their place in `ledger`.
async fn read<S: Source>(
    source: &S,
    shard: &str,
    start: StartPosition,
    ledger: &[RecordPosition],
) -> Result<Read, &'static str> {
    let (seen, ended) = positions(source, shard, &start, 2).await?;
    Ok(Read {
        records: seen
            .iter()
            .map(|p| ledger.iter().position(|l| l == p).unwrap_or(usize::MAX))
            .collect(),
        ended,
    })
}

/// The reads every source must answer alike, on a shard holding `ledger`; with
/// `missing`, also from a shard that does not exist.
async fn reads<S: Source>(
    source: &S,
    shard: &str,
    ledger: &[RecordPosition],
    missing: Option<&str>,
) -> Vec<(String, Result<Read, &'static str>)> {
    let third = ledger[2].sequence.clone();
    let mut reads = vec![
        (
            "trim horizon".into(),
            read(source, shard, StartPosition::TrimHorizon, ledger).await,
        ),
        (
            "at the third".into(),
            read(source, shard, StartPosition::AtSequence(third.clone()), ledger).await,
        ),
        (
            "after the third".into(),
            read(source, shard, StartPosition::AfterSequence(third), ledger).await,
        ),
        (
            "latest".into(),
            read(source, shard, StartPosition::Latest, ledger).await,
        ),
    ];
    if let Some(missing) = missing {
        reads.push((
            "a shard that does not exist".into(),
            read(source, missing, StartPosition::TrimHorizon, ledger).await,
        ));
    }
    reads
}

/// A listed shard: id, parents, closed, hash range.
type ShardShape = (String, Vec<String>, bool, Option<(u128, u128)>);

fn shape(shards: &[Shard]) -> Vec<ShardShape> {
    let mut shape: Vec<_> = shards
        .iter()
        .map(|s| (s.id.clone(), s.parent_ids.clone(), s.closed, s.hash_range))
        .collect();
    shape.sort();
    shape
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kinesis_model_answers_like_kinesalite() {
    let aws = stack::aws().await;
    let name = stack::unique_name("sim-contract");
    stack::create_stream(&aws, &name, 1).await;
    let real = KinesisSource::new(aws.kinesis(), &name);
    let (sim, stream, world) = model(Flavor::Kinesis);
    let shard = "shardId-000000000000";

    let puts: Vec<Vec<u8>> = (0..5).map(|i| format!("record-{i}").into_bytes()).collect();
    stack::put_records(
        &aws,
        &name,
        &puts.iter().map(|p| ("key".to_string(), p.clone())).collect::<Vec<_>>(),
    )
    .await;
    for _ in &puts {
        stream.lock().expect("model").put_record(shard, 1, world.now());
    }
    assert_eq!(
        shape(&real.list_shards().await.expect("list")),
        shape(&sim.list_shards().await.expect("list"))
    );

    let (real_ledger, _) = positions(&real, shard, &StartPosition::TrimHorizon, 100)
        .await
        .expect("ledger");
    let (sim_ledger, _) = positions(&sim, shard, &StartPosition::TrimHorizon, 100)
        .await
        .expect("ledger");
    assert_eq!(real_ledger.len(), 5);
    let missing = Some("shardId-000000000099");
    assert_eq!(
        reads(&real, shard, &real_ledger, missing).await,
        reads(&sim, shard, &sim_ledger, missing).await
    );

    // A split closes the shard: its children list it as parent, each with half its
    // hash range, and the parent reads to its end.
    let (_, start, end) = stack::open_shards(&aws, &name).await[0].clone();
    aws.kinesis()
        .split_shard()
        .stream_name(&name)
        .shard_to_split(shard)
        .new_starting_hash_key((start + (end - start) / 2 + 1).to_string())
        .send()
        .await
        .expect("split");
    stack::wait_stream_active(&aws, &name).await;
    stream.lock().expect("model").split(shard, world.now());
    assert_eq!(
        shape(&real.list_shards().await.expect("list")),
        shape(&sim.list_shards().await.expect("list"))
    );
    let missing = Some("shardId-000000000099");
    assert_eq!(
        reads(&real, shard, &real_ledger, missing).await,
        reads(&sim, shard, &sim_ledger, missing).await
    );

    // A merge of the two children: one grandchild with both as parents.
    let open = stack::open_shards(&aws, &name).await;
    aws.kinesis()
        .merge_shards()
        .stream_name(&name)
        .shard_to_merge(&open[0].0)
        .adjacent_shard_to_merge(&open[1].0)
        .send()
        .await
        .expect("merge");
    stack::wait_stream_active(&aws, &name).await;
    stream.lock().expect("model").merge(&open[0].0, &open[1].0, world.now());
    assert_eq!(
        shape(&real.list_shards().await.expect("list")),
        shape(&sim.list_shards().await.expect("list"))
    );
    // An empty closed shard ends at once.
    for child in [&open[0].0, &open[1].0] {
        let real_read = read(&real, child, StartPosition::TrimHorizon, &real_ledger).await;
        let sim_read = read(&sim, child, StartPosition::TrimHorizon, &sim_ledger).await;
        assert_eq!(real_read, sim_read, "closed child {child}");
        assert_eq!(
            sim_read,
            Ok(Read {
                records: Vec::new(),
                ended: true
            })
        );
    }
    stack::delete_stream(&aws, &name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dynamodb_streams_model_answers_like_moto() {
    let aws = stack::aws().await;
    let table = stack::unique_name("sim-contract");
    stack::create_table_with_stream(&aws, &table, "id", StreamViewType::NewImage).await;
    for i in 0..5 {
        aws.dynamodb()
            .put_item()
            .table_name(&table)
            .item("id", AttributeValue::S(format!("item-{i}")))
            .send()
            .await
            .expect("put item");
    }
    let real = DynamoDbStreamSource::for_table(&aws.dynamodb(), aws.dynamodb_streams(), &table)
        .await
        .expect("stream");
    let (sim, stream, world) = model(Flavor::DynamoDbStreams);
    let real_shards = real.list_shards().await.expect("list");
    let sim_shards = sim.list_shards().await.expect("list");
    let anonymous = |shards: &[Shard]| {
        shards
            .iter()
            .map(|s| (s.parent_ids.len(), s.closed, s.hash_range))
            .collect::<Vec<_>>()
    };
    assert_eq!(anonymous(&real_shards), anonymous(&sim_shards));
    for _ in 0..5 {
        stream
            .lock()
            .expect("model")
            .put_record(&sim_shards[0].id, 1, world.now());
    }
    let (real_ledger, _) = positions(&real, &real_shards[0].id, &StartPosition::TrimHorizon, 100)
        .await
        .expect("ledger");
    let (sim_ledger, _) = positions(&sim, &sim_shards[0].id, &StartPosition::TrimHorizon, 100)
        .await
        .expect("ledger");
    assert_eq!(real_ledger.len(), 5);
    // Not compared: a shard that does not exist. DynamoDB Streams answers
    // ResourceNotFoundException (as the model does); moto answers HTTP 500.
    assert_eq!(
        reads(&real, &real_shards[0].id, &real_ledger, None).await,
        reads(&sim, &sim_shards[0].id, &sim_ledger, None).await
    );
    stack::delete_table(&aws, &table).await;
}

/// A lease-table call's outcome: its value, or its error's kind.
fn outcome<T: std::fmt::Debug>(
    result: Result<T, shard_consumer::lease_table::LeaseTableError>,
) -> Result<String, ErrorKind> {
    result.map(|v| format!("{v:?}")).map_err(|e| e.kind())
}

/// One step of the lease-table script: its name, what the call answered, and the
/// lease and the worker entries after it.
type Step = (&'static str, Result<String, ErrorKind>, Option<Lease>, Vec<WorkerEntry>);

/// The same calls on a lease table and its worker table, step by step.
async fn lease_script(store: &dyn LeaseStore) -> Vec<Step> {
    let mut log = Vec::new();
    let key = "shardId-000000000007";
    let fresh = Lease::new(key, Checkpoint::TrimHorizon, vec!["shardId-000000000001".into()]);
    let at = Checkpoint::At(RecordPosition {
        sequence: SequenceNumber::parse("49590338271490256608559692538361571095921575989136588898").expect("digits"),
        subsequence: 2,
    });
    let worker = |id: &str, heartbeat: u64, wants: &[&str]| WorkerEntry {
        worker_id: id.into(),
        heartbeat,
        leases: 3,
        wants: wants.iter().map(|w| w.to_string()).collect(),
        lease_epoch: 1,
    };
    macro_rules! step {
        ($name:expr, $call:expr) => {{
            let result = outcome($call.await);
            log.push((
                $name,
                result,
                store.get(key).await.expect("get"),
                store.workers().await.expect("workers"),
            ));
        }};
    }
    store.ensure_exists(true).await.expect("tables");
    step!("create", store.create(&fresh));
    step!("create again", store.create(&fresh));
    step!("list", store.list());
    let read = store.get(key).await.expect("get").expect("lease");
    step!("take", store.take(&read, "a"));
    step!("take with a stale counter", store.take(&read, "b"));
    step!("hand over", store.hand_off(key, "a", 1, "b"));
    step!("hand over by the old holder", store.hand_off(key, "a", 2, "c"));
    step!("hand over with an old counter", store.hand_off(key, "b", 1, "c"));
    step!("checkpoint", store.checkpoint(key, "b", 2, &at));
    let read = store.get(key).await.expect("get").expect("lease");
    step!("take from a dead holder", store.take(&read, "a"));
    step!("checkpoint by the old holder", store.checkpoint(key, "b", 3, &at));
    step!("release", store.release(key, "a", 4));
    step!("release again", store.release(key, "a", 4));
    step!("delete while not finished", store.delete_finished(key));
    let read = store.get(key).await.expect("get").expect("lease");
    step!("take again", store.take(&read, "a"));
    step!(
        "checkpoint SHARD_END",
        store.checkpoint(key, "a", 6, &Checkpoint::ShardEnd)
    );
    step!("delete when finished", store.delete_finished(key));
    step!("take a lease that is gone", store.take(&read, "a"));
    step!("hand over a lease that is gone", store.hand_off(key, "a", 7, "b"));
    step!("delete a lease that is gone", store.delete_finished(key));
    step!("heartbeat", store.heartbeat(&worker("a", 1, &["s2", "s1"])));
    step!("another worker's heartbeat", store.heartbeat(&worker("b", 1, &[])));
    step!("heartbeat again", store.heartbeat(&worker("a", 2, &[])));
    step!("forget a worker that came back", store.remove_worker("b", Some(9)));
    step!("forget a dead worker", store.remove_worker("b", Some(1)));
    step!("leave", store.remove_worker("a", None));
    step!("leave again", store.remove_worker("a", None));
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_table_model_answers_like_dynamodb_on_moto() {
    let aws = stack::aws().await;
    let name = stack::unique_name("sim-contract-leases");
    let real = LeaseTable::new(aws.dynamodb(), &name);
    let world = Arc::new(World::new(1));
    let sim = SimLeaseStore {
        table: Arc::new(Mutex::new(TableModel::new(
            Duration::from_secs(10),
            Arc::new(Observer::default()),
        ))),
        world: world.clone(),
        faults: Arc::new(Faults::new(world, FaultRates::NONE)),
        gate: Gate::default(),
    };
    let real_log = lease_script(&real).await;
    let sim_log = lease_script(&sim).await;
    for (real_step, sim_step) in real_log.iter().zip(&sim_log) {
        assert_eq!(real_step, sim_step, "step {:?}", real_step.0);
    }
    assert_eq!(real_log.len(), sim_log.len());
    stack::delete_table(&aws, &name).await;
}
