//! Lease balancing, at-least-once delivery and graceful handover on kinesalite + moto.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_kinesis::primitives::Blob;
use pipeline_runtime::{AwsClients, Metrics};
use pipeline_tests::stack;
use shard_consumer::error::{AwsError, ErrorKind};
use shard_consumer::kinesis::{KinesisRecord, KinesisSource};
use shard_consumer::lease_table::LeaseTableError;
use shard_consumer::{
    Batch, Checkpointer, Consumer, ConsumerConfig, LeaseTable, ProcessorError, ProcessorFactory, RecordProcessor,
};
use tokio_util::sync::CancellationToken;

const FAILOVER: Duration = Duration::from_secs(3);

/// Everything the workers processed: (worker, shard, data).
type Seen = Arc<Mutex<Vec<(String, String, String)>>>;

struct Recorder {
    worker: String,
    shard: String,
    seen: Seen,
}

impl RecordProcessor<KinesisRecord> for Recorder {
    async fn process(
        &mut self,
        batch: &Batch<KinesisRecord>,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        {
            let mut seen = self.seen.lock().expect("lock");
            for record in &batch.records {
                seen.push((
                    self.worker.clone(),
                    self.shard.clone(),
                    String::from_utf8_lossy(&record.data).to_string(),
                ));
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

struct Factory {
    worker: String,
    seen: Seen,
}

impl ProcessorFactory<KinesisRecord> for Factory {
    type Processor = Recorder;
    fn create(&self, shard_id: &str) -> Recorder {
        Recorder {
            worker: self.worker.clone(),
            shard: shard_id.to_string(),
            seen: self.seen.clone(),
        }
    }
}

struct Worker {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

fn start_worker(aws: &AwsClients, stream: &str, table: &str, worker: &str, seen: &Seen) -> Worker {
    let mut config = ConsumerConfig::new("test", worker).with_failover(FAILOVER);
    config.idle_between_reads = Duration::from_millis(200);
    let consumer = Consumer::new(
        KinesisSource::new(aws.kinesis(), stream),
        LeaseTable::new(aws.dynamodb(), table),
        Factory {
            worker: worker.to_string(),
            seen: seen.clone(),
        },
        config,
        Metrics::with_sink("Test", "shard-consumer", Box::new(std::io::sink())),
    );
    let stop = CancellationToken::new();
    let token = stop.clone();
    let task = tokio::spawn(async move {
        consumer.run(token).await.expect("consumer runs");
    });
    Worker { stop, task }
}

async fn put(aws: &AwsClients, stream: &str, from: usize, to: usize) {
    for i in from..to {
        aws.kinesis()
            .put_record()
            .stream_name(stream)
            .partition_key(format!("player-{i}"))
            .data(Blob::new(format!("event-{i}").into_bytes()))
            .send()
            .await
            .expect("put record");
    }
}

/// Lease owners by shard; empty until a worker has created the table.
async fn owners(table: &LeaseTable) -> HashMap<String, Option<String>> {
    match table.list().await {
        Ok(leases) => leases.into_iter().map(|l| (l.key, l.owner)).collect(),
        Err(LeaseTableError::Aws(AwsError {
            kind: ErrorKind::NotFound,
            ..
        })) => HashMap::new(),
        Err(error) => panic!("leases: {error}"),
    }
}

async fn wait_until_seen(seen: &Seen, count: usize, timeout: Duration) -> HashSet<String> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let distinct: HashSet<String> = seen.lock().expect("lock").iter().map(|(_, _, d)| d.clone()).collect();
        if distinct.len() >= count || tokio::time::Instant::now() > deadline {
            return distinct;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_share_six_shards_and_hand_over_on_stop() {
    let aws = stack::aws().await;
    let stream = stack::unique_name("sc-balance");
    let table_name = stack::unique_name("sc-leases");
    stack::create_stream(&aws, &stream, 6).await;
    put(&aws, &stream, 0, 60).await;

    let seen: Seen = Arc::default();
    let mut workers: Vec<(String, Worker)> = ["w1", "w2", "w3"]
        .into_iter()
        .map(|w| (w.to_string(), start_worker(&aws, &stream, &table_name, w, &seen)))
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

    put(&aws, &stream, 60, 120).await;
    let distinct = wait_until_seen(&seen, 120, Duration::from_secs(20)).await;
    assert_eq!(distinct.len(), 120, "every record is processed at least once");

    // A graceful stop releases the leases; the others take them within one taker pass.
    let (stopped_id, stopped) = workers.remove(0);
    stopped.stop.cancel();
    tokio::time::timeout(Duration::from_secs(15), stopped.task)
        .await
        .expect("stops in time")
        .expect("task");
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

    put(&aws, &stream, 120, 150).await;
    let distinct = wait_until_seen(&seen, 150, Duration::from_secs(20)).await;
    assert_eq!(distinct.len(), 150, "records after the handover are processed");

    for (_, worker) in workers {
        worker.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(15), worker.task).await;
    }
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
    put(&aws, &stream, 0, 20).await;
    let seen: Seen = Arc::default();
    let victim = start_worker(&aws, &stream, &table_name, "victim", &seen);
    assert_eq!(wait_until_seen(&seen, 20, Duration::from_secs(20)).await.len(), 20);
    let survivor = start_worker(&aws, &stream, &table_name, "survivor", &seen);
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
    put(&aws, &stream, 20, 40).await;
    assert_eq!(wait_until_seen(&seen, 40, Duration::from_secs(20)).await.len(), 40);
    survivor.stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(15), survivor.task).await;
    stack::delete_stream(&aws, &stream).await;
    stack::delete_table(&aws, &table_name).await;
}
