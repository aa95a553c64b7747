//! In-memory streams with a life: a Kinesis-like stream that splits and merges, and a
//! DynamoDB-Streams-like one whose shards roll over about every 4 hours; both trim
//! records after their retention (24 hours), list a closed shard until its last record
//! is trimmed, and expire iterators after 5 minutes.
//!
//! Where the two services answer differently, the model follows each:
//! - a position older than the trim horizon: DynamoDB Streams answers
//!   `TrimmedDataAccessException` (GetShardIterator and GetRecords); Kinesis starts at
//!   the oldest record left, so the gap goes unseen by the reader;
//! - a shard no longer listed: both answer `ResourceNotFoundException`.
//!
//! Records are made lazily: whenever the model is touched it first plays every put,
//! reshard and rollover due until now, in time order, so the result does not depend on
//! how often it is touched.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pipeline_runtime::error::{AwsError, ErrorKind};
use shard_consumer::error::ReadError;
use shard_consumer::source::ReadResult;
use shard_consumer::{RecordPosition, SequenceNumber, Shard, Source, StartPosition, StreamRecord};

use crate::faults::{Call, Faults, Gate};
use crate::world::{World, lock};

/// Which service the stream behaves like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Kinesis,
    DynamoDbStreams,
}

impl Flavor {
    pub fn name(self) -> &'static str {
        match self {
            Flavor::Kinesis => "kinesis",
            Flavor::DynamoDbStreams => "dynamodb-streams",
        }
    }
}

/// How a simulated stream lives.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    pub flavor: Flavor,
    /// Open shards at the start.
    pub shards: usize,
    /// Records are trimmed this long after they were put (24 h on both services by default).
    pub retention: Duration,
    pub iterator_lifetime: Duration,
    /// Mean time between two records of one open shard (`None`: no records at all).
    pub record_gap: Option<Duration>,
    /// Share of records that are KPL aggregates (of 2 to 4 user records).
    pub aggregate_share: f64,
    /// DynamoDB Streams: a shard's life before it rolls over (give or take 30 minutes).
    /// Kinesis: the mean time between two reshards (`None`: never).
    pub lifecycle_every: Option<Duration>,
    /// Kinesis splits only while fewer shards are open; DynamoDB Streams splits a
    /// partition (one shard, two children) now and then below it.
    pub max_open: usize,
    /// No puts, reshards or rollovers after this (the run drains).
    pub active_until: Duration,
}

impl StreamSettings {
    pub fn new(flavor: Flavor, shards: usize, active_until: Duration) -> Self {
        Self {
            flavor,
            shards,
            retention: Duration::from_secs(24 * 3600),
            iterator_lifetime: Duration::from_secs(300),
            record_gap: Some(Duration::from_secs(10)),
            aggregate_share: 0.2,
            lifecycle_every: Some(match flavor {
                Flavor::Kinesis => Duration::from_secs(5 * 3600),
                Flavor::DynamoDbStreams => Duration::from_secs(4 * 3600),
            }),
            max_open: shards * 2,
            active_until,
        }
    }
}

/// One stream record: its sequence number, when it was put, and how many user records
/// it holds (more than one: a KPL aggregate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelRecord {
    pub seq: u64,
    pub at: Duration,
    pub subs: u32,
}

/// One shard as the service knows it.
#[derive(Debug, Clone)]
pub struct ModelShard {
    pub id: String,
    pub parents: Vec<String>,
    pub hash_range: Option<(u128, u128)>,
    pub created: Duration,
    pub closed: Option<Duration>,
    pub records: Vec<ModelRecord>,
    next_put: Duration,
    next_rollover: Duration,
}

/// What happened to a stream over a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamCounts {
    pub shards: u64,
    pub splits: u64,
    pub merges: u64,
    pub rollovers: u64,
    pub stream_records: u64,
    pub user_records: u64,
}

/// A stream's whole state.
#[derive(Debug)]
pub struct StreamModel {
    world: Arc<World>,
    settings: StreamSettings,
    shards: Vec<ModelShard>,
    by_id: BTreeMap<String, usize>,
    next_seq: u64,
    next_reshard: Duration,
    /// The time of the next put, reshard or rollover, once known: reads far outnumber
    /// them, and finding the next one looks at every open shard.
    next_due: Option<Duration>,
    counts: StreamCounts,
}

/// A user record as the consumer hands it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimRecord {
    /// The stream record's index in its shard.
    pub index: usize,
    /// The user record's index in its stream record, and how many there are.
    pub sub: u32,
    pub subs: u32,
    pub position: RecordPosition,
}

impl StreamRecord for SimRecord {
    fn position(&self) -> &RecordPosition {
        &self.position
    }
    fn size_bytes(&self) -> usize {
        120
    }
}

fn aws(operation: &'static str, kind: ErrorKind, message: &str) -> AwsError {
    AwsError::new(operation, kind, message)
}

impl StreamModel {
    pub fn new(world: Arc<World>, settings: StreamSettings) -> Self {
        let mut model = Self {
            world,
            settings,
            shards: Vec::new(),
            by_id: BTreeMap::new(),
            next_seq: 49_000_000_000,
            next_reshard: Duration::ZERO,
            next_due: None,
            counts: StreamCounts::default(),
        };
        let n = model.settings.shards.max(1) as u128;
        let width = u128::MAX / n;
        for i in 0..n {
            let last = if i + 1 == n { u128::MAX } else { (i + 1) * width - 1 };
            // DynamoDB Streams shards have no hash key range.
            let range = (model.settings.flavor == Flavor::Kinesis).then_some((i * width, last));
            model.open_shard(Duration::ZERO, Vec::new(), range);
        }
        if let Some(every) = model.settings.lifecycle_every {
            model.next_reshard = model.world.exponential(every);
        }
        model
    }

    pub fn settings(&self) -> &StreamSettings {
        &self.settings
    }

    pub fn counts(&self) -> StreamCounts {
        self.counts
    }

    /// Every shard ever made, in the order they were made.
    pub fn shards(&self) -> &[ModelShard] {
        &self.shards
    }

    pub fn shard(&self, id: &str) -> Option<&ModelShard> {
        self.by_id.get(id).map(|&i| &self.shards[i])
    }

    fn open_shard(&mut self, at: Duration, parents: Vec<String>, hash_range: Option<(u128, u128)>) -> usize {
        self.next_due = None;
        let number = self.shards.len();
        let id = match self.settings.flavor {
            Flavor::Kinesis => format!("shardId-{number:012}"),
            // DynamoDB Streams shard ids carry their creation time first.
            Flavor::DynamoDbStreams => format!("shardId-{:020}-{:08x}", at.as_millis(), number),
        };
        let next_put = at
            + self
                .settings
                .record_gap
                .map_or(Duration::MAX / 4, |gap| self.world.exponential(gap));
        let next_rollover = at
            + match (self.settings.flavor, self.settings.lifecycle_every) {
                (Flavor::DynamoDbStreams, Some(every)) => self.world.between(
                    every.saturating_sub(Duration::from_secs(1800)),
                    every + Duration::from_secs(1800),
                ),
                _ => Duration::MAX / 4,
            };
        self.shards.push(ModelShard {
            id: id.clone(),
            parents,
            hash_range,
            created: at,
            closed: None,
            records: Vec::new(),
            next_put,
            next_rollover,
        });
        self.by_id.insert(id, number);
        self.counts.shards += 1;
        number
    }

    fn open(&self) -> Vec<usize> {
        (0..self.shards.len())
            .filter(|&i| self.shards[i].closed.is_none())
            .collect()
    }

    /// Plays every put, reshard and rollover due by `now`, in time order.
    pub fn advance(&mut self, now: Duration) {
        let until = now.min(self.settings.active_until);
        if self.next_due.is_some_and(|due| until < due) {
            return;
        }
        loop {
            let open = self.open();
            let next_put = open.iter().map(|&i| (self.shards[i].next_put, i)).min();
            let next_rollover = open.iter().map(|&i| (self.shards[i].next_rollover, i)).min();
            let reshard = match (self.settings.flavor, self.settings.lifecycle_every) {
                (Flavor::Kinesis, Some(_)) => Some(self.next_reshard),
                _ => None,
            };
            let mut due: Option<(Duration, u8, usize)> = None;
            let mut earliest: Option<Duration> = None;
            for (at, kind, shard) in [
                next_put.map(|(at, i)| (at, 0u8, i)),
                next_rollover.map(|(at, i)| (at, 1u8, i)),
                reshard.map(|at| (at, 2u8, 0)),
            ]
            .into_iter()
            .flatten()
            {
                earliest = Some(earliest.map_or(at, |e| e.min(at)));
                if at <= until && due.is_none_or(|(best, _, _)| at < best) {
                    due = Some((at, kind, shard));
                }
            }
            let Some((at, kind, shard)) = due else {
                self.next_due = Some(earliest.unwrap_or(Duration::MAX));
                return;
            };
            match kind {
                0 => self.put(shard, at),
                1 => self.roll_over(shard, at),
                _ => self.reshard(at),
            }
        }
    }

    fn put(&mut self, shard: usize, at: Duration) {
        let subs = if self.world.chance(self.settings.aggregate_share) {
            2 + self.world.below(3) as u32
        } else {
            1
        };
        let seq = self.next_seq;
        self.next_seq += 1 + self.world.below(1000) as u64;
        let gap = self
            .settings
            .record_gap
            .map_or(Duration::MAX / 4, |g| self.world.exponential(g));
        let target = &mut self.shards[shard];
        target.records.push(ModelRecord { seq, at, subs });
        target.next_put = at + gap;
        self.counts.stream_records += 1;
        self.counts.user_records += u64::from(subs);
    }

    fn close(&mut self, shard: usize, at: Duration) {
        self.next_due = None;
        self.shards[shard].closed = Some(at);
    }

    /// DynamoDB Streams: a shard closes and one child (now and then two) goes on.
    fn roll_over(&mut self, shard: usize, at: Duration) {
        self.close(shard, at);
        let parent = vec![self.shards[shard].id.clone()];
        let split = self.open().len() + 2 <= self.settings.max_open && self.world.chance(0.1);
        self.open_shard(at, parent.clone(), None);
        if split {
            self.open_shard(at, parent, None);
            self.counts.splits += 1;
        }
        self.counts.rollovers += 1;
    }

    /// Kinesis: a split of one open shard, or a merge of two adjacent ones.
    fn reshard(&mut self, at: Duration) {
        let every = self.settings.lifecycle_every.unwrap_or(Duration::from_secs(3600));
        self.next_reshard = at + self.world.exponential(every);
        let mut open = self.open();
        open.sort_by_key(|&i| self.shards[i].hash_range.map(|r| r.0));
        let adjacent: Vec<(usize, usize)> = open
            .windows(2)
            .filter_map(|pair| {
                let (a, b) = (self.shards[pair[0]].hash_range?, self.shards[pair[1]].hash_range?);
                (a.1.checked_add(1) == Some(b.0)).then_some((pair[0], pair[1]))
            })
            .collect();
        let split = open.len() < self.settings.max_open && (adjacent.is_empty() || self.world.chance(0.5));
        if split {
            let shard = open[self.world.below(open.len())];
            let Some((first, last)) = self.shards[shard].hash_range else {
                return;
            };
            let middle = first + (last - first) / 2;
            self.close(shard, at);
            let parent = vec![self.shards[shard].id.clone()];
            self.open_shard(at, parent.clone(), Some((first, middle)));
            self.open_shard(at, parent, Some((middle + 1, last)));
            self.counts.splits += 1;
        } else if let Some(&(a, b)) = adjacent.get(self.world.below(adjacent.len())) {
            let (Some(left), Some(right)) = (self.shards[a].hash_range, self.shards[b].hash_range) else {
                return;
            };
            self.close(a, at);
            self.close(b, at);
            let parents = vec![self.shards[a].id.clone(), self.shards[b].id.clone()];
            self.open_shard(at, parents, Some((left.0, right.1)));
            self.counts.merges += 1;
        }
    }

    /// Puts one stream record of `subs` user records into `shard_id` now (a contract
    /// test's PutRecord); returns its index in the shard.
    pub fn put_record(&mut self, shard_id: &str, subs: u32, now: Duration) -> Option<usize> {
        let index = *self.by_id.get(shard_id)?;
        if self.shards[index].closed.is_some() {
            return None;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let shard = &mut self.shards[index];
        shard.records.push(ModelRecord { seq, at: now, subs });
        self.counts.stream_records += 1;
        self.counts.user_records += u64::from(subs);
        Some(shard.records.len() - 1)
    }

    /// Splits an open Kinesis shard in two halves of its hash range now.
    pub fn split(&mut self, shard_id: &str, now: Duration) -> Option<(String, String)> {
        let index = *self.by_id.get(shard_id)?;
        let (first, last) = self.shards[index].hash_range?;
        let middle = first + (last - first) / 2;
        self.close(index, now);
        let parent = vec![shard_id.to_string()];
        let lower = self.open_shard(now, parent.clone(), Some((first, middle)));
        let upper = self.open_shard(now, parent, Some((middle + 1, last)));
        self.counts.splits += 1;
        Some((self.shards[lower].id.clone(), self.shards[upper].id.clone()))
    }

    /// Merges two open Kinesis shards with adjacent hash ranges now.
    pub fn merge(&mut self, shard_id: &str, adjacent: &str, now: Duration) -> Option<String> {
        let (a, b) = (*self.by_id.get(shard_id)?, *self.by_id.get(adjacent)?);
        let (left, right) = (self.shards[a].hash_range?, self.shards[b].hash_range?);
        self.close(a, now);
        self.close(b, now);
        let parents = vec![shard_id.to_string(), adjacent.to_string()];
        let child = self.open_shard(now, parents, Some((left.0.min(right.0), left.1.max(right.1))));
        self.counts.merges += 1;
        Some(self.shards[child].id.clone())
    }

    /// Whether the service still lists the shard at `now`: open, or closed less than a
    /// retention ago (it still has records).
    pub fn is_listed(&self, shard: &ModelShard, now: Duration) -> bool {
        shard.closed.is_none_or(|closed| closed + self.settings.retention > now)
    }

    /// How many of a shard's records are trimmed at `now`.
    pub fn trimmed(&self, shard: &ModelShard, now: Duration) -> usize {
        let retention = self.settings.retention;
        shard.records.partition_point(|r| r.at + retention <= now)
    }

    /// ListShards / DescribeStream.
    pub fn list(&mut self, now: Duration) -> Vec<Shard> {
        self.advance(now);
        self.shards
            .iter()
            .filter(|s| self.is_listed(s, now))
            .map(|s| Shard {
                id: s.id.clone(),
                parent_ids: s.parents.clone(),
                closed: s.closed.is_some(),
                hash_range: s.hash_range,
            })
            .collect()
    }

    fn listed(&self, shard_id: &str, now: Duration, operation: &'static str) -> Result<usize, ReadError> {
        match self.by_id.get(shard_id) {
            Some(&i) if self.is_listed(&self.shards[i], now) => Ok(i),
            _ => Err(ReadError::ShardNotFound(aws(
                operation,
                ErrorKind::Permanent,
                "ResourceNotFoundException: the shard does not exist",
            ))),
        }
    }

    /// A position before the trim horizon: DynamoDB Streams refuses it, Kinesis moves it up.
    fn check_trimmed(
        &self,
        shard: usize,
        index: usize,
        now: Duration,
        operation: &'static str,
    ) -> Result<usize, ReadError> {
        let trimmed = self.trimmed(&self.shards[shard], now);
        if index >= trimmed {
            return Ok(index);
        }
        match self.settings.flavor {
            Flavor::Kinesis => Ok(trimmed),
            Flavor::DynamoDbStreams => Err(ReadError::Trimmed(aws(
                operation,
                ErrorKind::Permanent,
                "TrimmedDataAccessException: the requested data is past the retention",
            ))),
        }
    }

    /// GetShardIterator.
    pub fn iterator(&mut self, now: Duration, shard_id: &str, start: &StartPosition) -> Result<String, ReadError> {
        const OPERATION: &str = "GetShardIterator";
        self.advance(now);
        let shard = self.listed(shard_id, now, OPERATION)?;
        let records = &self.shards[shard].records;
        let seq_of = |s: &SequenceNumber| s.as_str().parse::<u64>().unwrap_or(u64::MAX);
        let index = match start {
            StartPosition::TrimHorizon => self.trimmed(&self.shards[shard], now),
            StartPosition::Latest => records.len(),
            StartPosition::AtTimestamp(ms) => {
                let at = Duration::from_millis((*ms).max(0) as u64);
                records.partition_point(|r| r.at < at)
            }
            StartPosition::AtSequence(seq) => {
                let seq = seq_of(seq);
                records.partition_point(|r| r.seq < seq)
            }
            StartPosition::AfterSequence(seq) => {
                let seq = seq_of(seq);
                records.partition_point(|r| r.seq <= seq)
            }
        };
        let index = self.check_trimmed(shard, index, now, OPERATION)?;
        Ok(format!("{shard_id}/{index}/{}", now.as_millis()))
    }

    /// GetRecords: up to `limit` stream records, as user records.
    pub fn read(
        &mut self,
        now: Duration,
        shard_id: &str,
        iterator: &str,
        limit: usize,
    ) -> Result<ReadResult<SimRecord>, ReadError> {
        const OPERATION: &str = "GetRecords";
        self.advance(now);
        let invalid = || {
            ReadError::Aws(aws(
                OPERATION,
                ErrorKind::Permanent,
                "InvalidArgumentException: malformed iterator",
            ))
        };
        let mut parts = iterator.split('/');
        let (Some(of), Some(index), Some(issued), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid());
        };
        let (Ok(index), Ok(issued)) = (index.parse::<usize>(), issued.parse::<u64>()) else {
            return Err(invalid());
        };
        if of != shard_id {
            return Err(invalid());
        }
        if Duration::from_millis(issued) + self.settings.iterator_lifetime <= now {
            return Err(ReadError::IteratorExpired);
        }
        let shard = self.listed(shard_id, now, OPERATION)?;
        let index = self.check_trimmed(shard, index, now, OPERATION)?;
        let model = &self.shards[shard];
        let end = (index + limit).min(model.records.len());
        let mut records = Vec::new();
        for (offset, record) in model.records[index..end].iter().enumerate() {
            let sequence = SequenceNumber::parse(&record.seq.to_string()).map_err(|_| invalid())?;
            for sub in 0..record.subs {
                records.push(SimRecord {
                    index: index + offset,
                    sub,
                    subs: record.subs,
                    position: RecordPosition {
                        sequence: sequence.clone(),
                        subsequence: u64::from(sub),
                    },
                });
            }
        }
        let ended = model.closed.is_some() && end == model.records.len();
        let millis_behind_latest = match self.settings.flavor {
            Flavor::Kinesis => Some(
                model
                    .records
                    .get(end)
                    .map_or(0, |next| now.saturating_sub(next.at).as_millis() as i64),
            ),
            Flavor::DynamoDbStreams => None,
        };
        Ok(ReadResult {
            records,
            next_iterator: (!ended).then(|| format!("{shard_id}/{end}/{}", now.as_millis())),
            millis_behind_latest,
            outside_hash_range: 0,
        })
    }
}

/// One worker's client of a simulated stream: every call passes the worker's gate and
/// the run's faults.
#[derive(Debug, Clone)]
pub struct SimSource {
    pub stream: Arc<Mutex<StreamModel>>,
    pub world: Arc<World>,
    pub faults: Arc<Faults>,
    pub gate: Gate,
}

impl SimSource {
    async fn call<T>(
        &self,
        operation: &'static str,
        apply: impl FnOnce(&mut StreamModel, Duration) -> Result<T, ReadError>,
    ) -> Result<T, ReadError> {
        let fate = self.faults.plan(&self.gate, Call::Read).await;
        tokio::time::sleep(fate.request).await;
        if let Some(kind) = fate.fail_before {
            return Err(ReadError::Aws(aws(operation, kind, "injected fault")));
        }
        let result = {
            let mut stream = lock(&self.stream);
            apply(&mut stream, self.world.now())
        };
        tokio::time::sleep(fate.response).await;
        self.gate.pass().await;
        result
    }
}

impl Source for SimSource {
    type Record = SimRecord;

    async fn list_shards(&self) -> Result<Vec<Shard>, AwsError> {
        self.call("ListShards", |stream, now| Ok(stream.list(now)))
            .await
            .map_err(|error| match error {
                ReadError::Aws(error) => error,
                other => aws("ListShards", ErrorKind::Transient, &other.to_string()),
            })
    }

    async fn shard_iterator(&self, shard_id: &str, start: &StartPosition) -> Result<String, ReadError> {
        self.call("GetShardIterator", |stream, now| stream.iterator(now, shard_id, start))
            .await
    }

    async fn read(&self, shard_id: &str, iterator: &str, limit: i32) -> Result<ReadResult<SimRecord>, ReadError> {
        let limit = usize::try_from(limit).unwrap_or(1).max(1);
        self.call("GetRecords", |stream, now| stream.read(now, shard_id, iterator, limit))
            .await
    }

    fn max_read_limit(&self) -> i32 {
        match lock(&self.stream).settings.flavor {
            Flavor::Kinesis => 10_000,
            Flavor::DynamoDbStreams => 1_000,
        }
    }

    fn describe(&self) -> String {
        format!("simulated {} stream", lock(&self.stream).settings.flavor.name())
    }
}
