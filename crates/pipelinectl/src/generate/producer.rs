//! PutRecords in batches within the API's limits, retrying only the entries a partial
//! failure names; with KPL aggregation, aggregating the way the Kinesis Producer
//! Library does.
//!
//! The KPL aggregates only user records it predicts for the same shard (from the hash
//! ranges ListShards gives), and puts each aggregate with an explicit hash key in that
//! shard's range. When the stream was resharded under it, Kinesis answers with another
//! shard than predicted: the producer then refreshes its shard map and sends again the
//! user records outside that shard's range, which the consumer drops there (the Java
//! KCL's rule, and `shard_consumer::kinesis`'s); the others are where they belong.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use shard_consumer::backoff::Backoff;
use shard_consumer::kpl;

use crate::aws::streams::{self, Entry, MAX_BYTES, MAX_RECORDS, Outcome, ShardRange};

/// One Kinesis record to put.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition_key: String,
    pub data: Bytes,
    /// Routes the record instead of the partition key's hash (an aggregate's target shard).
    pub explicit_hash_key: Option<String>,
    /// For an aggregate: the shard it was made for, and its user records (sent again
    /// when Kinesis put the aggregate elsewhere).
    pub aggregate_of: Option<(String, Vec<(String, Bytes)>)>,
}

impl Record {
    pub fn plain(partition_key: String, data: Bytes) -> Self {
        Self {
            partition_key,
            data,
            explicit_hash_key: None,
            aggregate_of: None,
        }
    }

    fn entry(&self) -> Entry<'_> {
        Entry {
            partition_key: &self.partition_key,
            explicit_hash_key: self.explicit_hash_key.as_deref(),
            data: &self.data,
        }
    }
}

/// What one flush did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub records: u64,
    pub retried: u64,
}

impl std::ops::AddAssign for Sent {
    fn add_assign(&mut self, other: Sent) {
        self.records += other.records;
        self.retried += other.retried;
    }
}

/// Where generated records go: the stream, or a file of lines (a sample to replay).
pub enum Sink {
    Stream(Producer),
    File(std::io::BufWriter<std::fs::File>),
}

impl Sink {
    /// One event's record (aggregated with others first when the producer aggregates).
    pub async fn push(&mut self, record: Record) -> anyhow::Result<Sent> {
        match self {
            Sink::Stream(producer) => producer.push_user_record(record).await,
            Sink::File(file) => {
                use std::io::Write;
                file.write_all(&record.data)?;
                file.write_all(b"\n")?;
                Ok(Sent {
                    records: 1,
                    ..Sent::default()
                })
            }
        }
    }

    pub async fn flush(&mut self) -> anyhow::Result<Sent> {
        match self {
            Sink::Stream(producer) => producer.flush().await,
            Sink::File(file) => {
                use std::io::Write;
                file.flush()?;
                Ok(Sent::default())
            }
        }
    }
}

/// KPL aggregation: user records waiting per predicted shard.
struct Aggregation {
    per_aggregate: usize,
    shards: Vec<ShardRange>,
    open: BTreeMap<String, Vec<(String, Bytes)>>,
}

pub struct Producer {
    kinesis: aws_sdk_kinesis::Client,
    stream: String,
    pending: Vec<Record>,
    bytes: usize,
    aggregation: Option<Aggregation>,
    /// Aggregates Kinesis put in another shard than predicted: that shard, and the users.
    misrouted: Vec<(String, Vec<(String, Bytes)>)>,
}

impl Producer {
    /// A producer that puts each record as it is.
    pub fn new(kinesis: aws_sdk_kinesis::Client, stream: &str) -> Self {
        Self {
            kinesis,
            stream: stream.to_string(),
            pending: Vec::new(),
            bytes: 0,
            aggregation: None,
            misrouted: Vec::new(),
        }
    }

    /// A producer that KPL-aggregates `per_aggregate` user records per Kinesis record.
    pub fn aggregating(kinesis: aws_sdk_kinesis::Client, stream: &str, per_aggregate: usize) -> Self {
        Self {
            aggregation: (per_aggregate > 1).then(|| Aggregation {
                per_aggregate,
                shards: Vec::new(),
                open: BTreeMap::new(),
            }),
            ..Self::new(kinesis, stream)
        }
    }

    /// The stream's shards (closed ones within retention too) and their hash ranges.
    async fn shard_map(&self) -> anyhow::Result<Vec<ShardRange>> {
        streams::list_shards(&self.kinesis, &self.stream)
            .await
            .map_err(|e| anyhow::anyhow!("ListShards on {}: {}", self.stream, e.explain()))
    }

    /// Queues one event's record: as it is, or into its predicted shard's aggregate.
    pub async fn push_user_record(&mut self, record: Record) -> anyhow::Result<Sent> {
        let needs_map = self.aggregation.as_ref().is_some_and(|a| a.shards.is_empty());
        if needs_map {
            let shards = self.shard_map().await?;
            if let Some(aggregation) = &mut self.aggregation {
                aggregation.shards = shards;
            }
        }
        let Some(aggregation) = &mut self.aggregation else {
            return self.push(record).await;
        };
        let hash = kpl::effective_hash_key(&record.partition_key, None);
        let shard = predicted(&aggregation.shards, hash);
        let open = aggregation.open.entry(shard.clone()).or_default();
        open.push((record.partition_key, record.data));
        if open.len() < aggregation.per_aggregate {
            return Ok(Sent::default());
        }
        let users = std::mem::take(open);
        let aggregate = aggregate_record(shard, users);
        self.push(aggregate).await
    }

    /// Queues a Kinesis record, sending a full batch first when it would not fit.
    async fn push(&mut self, record: Record) -> anyhow::Result<Sent> {
        let mut sent = Sent::default();
        let size = record.entry().size();
        if self.pending.len() == MAX_RECORDS || self.bytes + size > MAX_BYTES {
            sent = self.send().await?;
        }
        self.bytes += size;
        self.pending.push(record);
        Ok(sent)
    }

    /// Sends everything queued, the open aggregates included; user records that landed
    /// in another shard than predicted are sent again on a fresh shard map.
    pub async fn flush(&mut self) -> anyhow::Result<Sent> {
        let mut sent = Sent::default();
        for _ in 0..10 {
            let open = match &mut self.aggregation {
                Some(aggregation) => std::mem::take(&mut aggregation.open),
                None => BTreeMap::new(),
            };
            for (shard, users) in open.into_iter().filter(|(_, users)| !users.is_empty()) {
                sent += self.push(aggregate_record(shard, users)).await?;
            }
            sent += self.send().await?;
            let misrouted = std::mem::take(&mut self.misrouted);
            if misrouted.is_empty() {
                return Ok(sent);
            }
            let shards = self.shard_map().await?;
            // The user records the shard they landed in does not hold: the consumer
            // drops them there, so they go again; the others are where they belong.
            let mut again = Vec::new();
            for (actual, users) in misrouted {
                let range = shards.iter().find(|s| s.id == actual);
                again.extend(
                    users
                        .into_iter()
                        .filter(|(key, _)| range.is_none_or(|r| !r.holds(kpl::effective_hash_key(key, None)))),
                );
            }
            sent.retried += again.len() as u64;
            if let Some(aggregation) = &mut self.aggregation {
                aggregation.shards = shards;
            }
            for (partition_key, data) in again {
                sent += self.push_user_record(Record::plain(partition_key, data)).await?;
            }
        }
        anyhow::bail!("user records kept landing in other shards than predicted after 10 shard-map refreshes")
    }

    /// Sends what is queued; failed entries are sent again until they all succeed.
    async fn send(&mut self) -> anyhow::Result<Sent> {
        let mut records = std::mem::take(&mut self.pending);
        self.bytes = 0;
        let mut sent = Sent::default();
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut attempts = 0;
        while !records.is_empty() {
            let entries: Vec<Entry<'_>> = records.iter().map(Record::entry).collect();
            let outcomes = streams::put_records(&self.kinesis, &self.stream, &entries)
                .await
                .map_err(|e| anyhow::anyhow!("PutRecords on {}: {}", self.stream, e.explain()))?;
            let answered = outcomes.len() as u64;
            let mut failed = Vec::new();
            for (outcome, record) in outcomes.into_iter().zip(records) {
                let shard_id = match outcome {
                    Outcome::Failed { .. } => {
                        failed.push(record);
                        continue;
                    }
                    Outcome::Put { shard_id } => shard_id,
                };
                // Put, but maybe not where the aggregate was meant to go.
                if let Some((predicted, users)) = record.aggregate_of
                    && let Some(actual) = shard_id.filter(|actual| *actual != predicted)
                {
                    self.misrouted.push((actual, users));
                }
            }
            sent.records += answered - failed.len() as u64;
            sent.retried += failed.len() as u64;
            records = failed;
            if !records.is_empty() {
                attempts += 1;
                anyhow::ensure!(
                    attempts < 20,
                    "{} records still failing after 20 attempts",
                    records.len()
                );
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
        Ok(sent)
    }
}

/// The open shard whose range holds `hash` (the first open shard when the map has a gap).
fn predicted(shards: &[ShardRange], hash: u128) -> String {
    let open = || shards.iter().filter(|s| s.open);
    open()
        .find(|s| s.holds(hash))
        .or_else(|| open().next())
        .map(|s| s.id.clone())
        .unwrap_or_default()
}

/// An aggregate of `users` for `shard`, routed by its first user record's hash key
/// (inside the shard's range, as predicted).
fn aggregate_record(shard: String, users: Vec<(String, Bytes)>) -> Record {
    let partition_key = users.first().map(|(k, _)| k.clone()).unwrap_or_default();
    let explicit_hash_key = kpl::effective_hash_key(&partition_key, None).to_string();
    Record {
        data: kpl::aggregate(&users),
        partition_key,
        explicit_hash_key: Some(explicit_hash_key),
        aggregate_of: Some((shard, users)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregates_go_to_the_predicted_shard_by_an_explicit_hash_key() {
        let shards = vec![
            ShardRange {
                first: 0,
                last: u128::MAX / 2,
                id: "low".into(),
                open: true,
            },
            ShardRange {
                first: u128::MAX / 2 + 1,
                last: u128::MAX,
                id: "high".into(),
                open: true,
            },
            ShardRange {
                first: 0,
                last: u128::MAX,
                id: "closed-parent".into(),
                open: false,
            },
        ];
        for key in ["a", "b", "c", "player-42"] {
            let hash = kpl::effective_hash_key(key, None);
            let shard = predicted(&shards, hash);
            assert_eq!(shard, if hash <= u128::MAX / 2 { "low" } else { "high" });
            let record = aggregate_record(shard.clone(), vec![(key.into(), Bytes::from_static(b"{}"))]);
            let routed: u128 = record
                .explicit_hash_key
                .as_deref()
                .and_then(|k| k.parse().ok())
                .expect("an explicit hash key");
            assert_eq!(predicted(&shards, routed), shard);
        }
    }
}
