//! What the integration tests share: a processor that records every delivery, worker
//! start-up, and the checks on what was delivered.
#![allow(dead_code)] // each test binary uses a different part

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_kinesis::primitives::Blob;
use pipeline_runtime::{AwsClients, Metrics};
use shard_consumer::dynamodb_streams::ChangeRecord;
use shard_consumer::kinesis::{KinesisRecord, KinesisSource};
use shard_consumer::lease_table::LeaseTableError;
use shard_consumer::{
    Batch, Checkpointer, Consumer, ConsumerConfig, LeaseTable, ProcessorError, ProcessorFactory, RecordPosition,
    RecordProcessor, Source, StreamRecord,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// One record as a processor received it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub worker: String,
    pub shard: String,
    /// Partition key (Kinesis) or the item's key (DynamoDB Streams).
    pub key: String,
    pub data: String,
    pub explicit_hash_key: Option<String>,
    pub position: RecordPosition,
    /// Why the record is invalid (a corrupt KPL aggregate), if it is.
    pub invalid: Option<String>,
    pub at: Instant,
}

/// What every worker's processors saw.
#[derive(Default)]
pub struct Recording {
    /// Every delivery, in the order processors received them.
    pub deliveries: Mutex<Vec<Delivery>>,
    readers: Mutex<Readers>,
    /// A payload whose first delivery makes the processor panic (a bug in it).
    pub panic_on: Mutex<Option<String>>,
}

pub type Log = Arc<Recording>;

/// The processors alive per shard, to measure how long two workers read one shard at once.
#[derive(Default)]
struct Readers {
    open: HashMap<String, Vec<(u64, Instant)>>,
    next_id: u64,
    longest_overlap: Duration,
}

impl Recording {
    fn reader_opened(&self, shard: &str) -> (u64, Instant) {
        let mut readers = self.readers.lock().expect("lock");
        readers.next_id += 1;
        let reader = (readers.next_id, Instant::now());
        readers.open.entry(shard.to_string()).or_default().push(reader);
        reader
    }

    fn reader_closed(&self, shard: &str, (id, opened): (u64, Instant)) {
        let mut readers = self.readers.lock().expect("lock");
        let now = Instant::now();
        let others: Vec<Instant> = readers
            .open
            .get(shard)
            .map(|open| open.iter().filter(|(o, _)| *o != id).map(|(_, at)| *at).collect())
            .unwrap_or_default();
        for other_opened in others {
            let overlap = now.duration_since(other_opened.max(opened));
            readers.longest_overlap = readers.longest_overlap.max(overlap);
        }
        if let Some(open) = readers.open.get_mut(shard) {
            open.retain(|(o, _)| *o != id);
        }
    }

    /// The longest time two processors of one shard were alive at once (so far).
    pub fn longest_overlap(&self) -> Duration {
        self.readers.lock().expect("lock").longest_overlap
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.deliveries.lock().expect("lock").clone()
    }
}

/// How a record reads in the log.
pub trait Describe {
    fn key(&self) -> String;
    fn data(&self) -> String;
    fn invalid(&self) -> Option<String> {
        None
    }
    fn explicit_hash_key(&self) -> Option<String> {
        None
    }
}

impl Describe for KinesisRecord {
    fn key(&self) -> String {
        self.partition_key.clone()
    }
    fn data(&self) -> String {
        String::from_utf8_lossy(&self.data).to_string()
    }
    fn invalid(&self) -> Option<String> {
        self.invalid.as_ref().map(|e| e.reason().to_string())
    }
    fn explicit_hash_key(&self) -> Option<String> {
        self.explicit_hash_key.clone()
    }
}

impl Describe for ChangeRecord {
    fn key(&self) -> String {
        self.keys
            .get("id")
            .and_then(|v| v.as_s().ok())
            .cloned()
            .unwrap_or_default()
    }
    fn data(&self) -> String {
        let version = |image: &Option<HashMap<String, aws_sdk_dynamodbstreams::types::AttributeValue>>| {
            image
                .as_ref()
                .and_then(|i| i.get("version"))
                .and_then(|v| v.as_n().ok())
                .cloned()
                .unwrap_or_else(|| "-".into())
        };
        format!("{}:{:?}:{}", self.key(), self.kind, version(&self.new_image))
    }
}

pub struct Recorder {
    worker: String,
    shard: String,
    log: Log,
    reader: (u64, Instant),
}

/// A processor lives from its shard's start to its end, lease loss, shutdown or the
/// worker's death (an aborted worker drops it).
impl Drop for Recorder {
    fn drop(&mut self) {
        self.log.reader_closed(&self.shard, self.reader);
    }
}

impl<R: StreamRecord + Describe + Sync> RecordProcessor<R> for Recorder {
    async fn process(&mut self, batch: &Batch<R>, checkpointer: &mut Checkpointer) -> Result<(), ProcessorError> {
        {
            let mut panic_on = self.log.panic_on.lock().expect("lock");
            if let Some(poison) = panic_on.as_ref()
                && batch.records.iter().any(|r| r.data() == *poison)
            {
                let poison = panic_on.take();
                drop(panic_on);
                panic!("the processor has a bug for {poison:?}");
            }
        }
        {
            let mut deliveries = self.log.deliveries.lock().expect("lock");
            for record in &batch.records {
                deliveries.push(Delivery {
                    worker: self.worker.clone(),
                    shard: self.shard.clone(),
                    key: record.key(),
                    data: record.data(),
                    explicit_hash_key: record.explicit_hash_key(),
                    position: record.position().clone(),
                    invalid: record.invalid(),
                    at: Instant::now(),
                });
            }
        }
        checkpointer.checkpoint_delivered().await?;
        Ok(())
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) -> Result<(), ProcessorError> {
        checkpointer.checkpoint_delivered().await?;
        Ok(())
    }

    async fn shutdown_requested(&mut self, checkpointer: &mut Checkpointer) -> Result<(), ProcessorError> {
        checkpointer.checkpoint_delivered().await?;
        Ok(())
    }
}

pub struct Recorders {
    worker: String,
    log: Log,
}

impl<R: StreamRecord + Describe + Sync> ProcessorFactory<R> for Recorders {
    type Processor = Recorder;
    fn create(&self, shard_id: &str) -> Recorder {
        Recorder {
            worker: self.worker.clone(),
            shard: shard_id.to_string(),
            log: self.log.clone(),
            reader: self.log.reader_opened(shard_id),
        }
    }
}

pub struct Worker {
    pub stop: CancellationToken,
    pub task: tokio::task::JoinHandle<()>,
}

impl Worker {
    /// Graceful stop: flush, checkpoint, release.
    pub async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("stops in time")
            .expect("worker task");
    }
}

/// Test settings: the given failover time and the fastest allowed reads.
pub fn config(worker: &str, failover: Duration) -> ConsumerConfig {
    let mut config = ConsumerConfig::new("test", worker).with_failover(failover);
    config.idle_between_reads = Duration::from_millis(200);
    config
}

/// Starts a worker whose processors append to `log`.
pub fn start<S>(aws: &AwsClients, source: S, table: &str, config: ConsumerConfig, log: &Log) -> Worker
where
    S: Source + 'static,
    S::Record: Describe,
{
    let metrics = Metrics::with_sink("Test", "shard-consumer", Box::new(std::io::sink()));
    start_with_metrics(aws, source, table, config, log, metrics)
}

/// [`start`], counting into `metrics`.
pub fn start_with_metrics<S>(
    aws: &AwsClients,
    source: S,
    table: &str,
    config: ConsumerConfig,
    log: &Log,
    metrics: Metrics,
) -> Worker
where
    S: Source + 'static,
    S::Record: Describe,
{
    let consumer = Consumer::new(
        source,
        LeaseTable::new(aws.dynamodb(), table),
        Recorders {
            worker: config.worker_id.clone(),
            log: log.clone(),
        },
        config,
        metrics,
    );
    let stop = CancellationToken::new();
    let token = stop.clone();
    let task = tokio::spawn(async move {
        consumer.run(token).await.expect("consumer runs");
    });
    Worker { stop, task }
}

/// A Kinesis worker with test settings.
pub fn start_kinesis(
    aws: &AwsClients,
    stream: &str,
    table: &str,
    worker: &str,
    failover: Duration,
    log: &Log,
) -> Worker {
    start(
        aws,
        KinesisSource::new(aws.kinesis(), stream),
        table,
        config(worker, failover),
        log,
    )
}

/// Puts `event-<i>` with partition key `player-<i % keys>` for each i in `range`.
pub async fn put(aws: &AwsClients, stream: &str, range: std::ops::Range<usize>, keys: usize) {
    for i in range {
        aws.kinesis()
            .put_record()
            .stream_name(stream)
            .partition_key(format!("player-{}", i % keys))
            .data(Blob::new(format!("event-{i}").into_bytes()))
            .send()
            .await
            .expect("put record");
    }
}

/// Lease owners by shard; empty until a worker has created the table.
pub async fn owners(table: &LeaseTable) -> HashMap<String, Option<String>> {
    match table.list().await {
        Ok(leases) => leases.into_iter().map(|l| (l.key, l.owner)).collect(),
        Err(LeaseTableError::Aws(error)) if error.code.as_deref() == Some("ResourceNotFoundException") => {
            HashMap::new()
        }
        Err(error) => panic!("leases: {error}"),
    }
}

/// Waits until `count` distinct payloads were delivered (or the timeout passed), and returns them.
pub async fn wait_until_delivered(log: &Log, count: usize, timeout: Duration) -> HashSet<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let distinct: HashSet<String> = log.deliveries().into_iter().map(|d| d.data).collect();
        if distinct.len() >= count || Instant::now() > deadline {
            return distinct;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// No shard had processors on two workers at once for longer than `failover`.
pub fn assert_one_reader_per_shard(log: &Log, failover: Duration) {
    let overlap = log.longest_overlap();
    assert!(
        overlap <= failover,
        "two workers read one shard at once for {overlap:?}, longer than the failover time {failover:?}"
    );
}
