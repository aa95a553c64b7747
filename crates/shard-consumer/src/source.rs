//! What the consumer needs from a stream, whichever service it is.

use std::future::Future;

use crate::error::{AwsError, ReadError};
use crate::position::{RecordPosition, SequenceNumber};

/// A shard and its lineage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    pub id: String,
    /// Parents after a split (one) or a merge (two).
    pub parent_ids: Vec<String>,
    /// The shard was closed by a reshard: it will end.
    pub closed: bool,
    /// The partition hash keys it holds, first and last (Kinesis; `None` elsewhere).
    pub hash_range: Option<(u128, u128)>,
}

/// Where to start reading a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartPosition {
    TrimHorizon,
    Latest,
    /// Milliseconds since the epoch.
    AtTimestamp(i64),
    /// At this record: used to resume a checkpoint (records it covers are skipped).
    AtSequence(SequenceNumber),
    /// After this record: used when an iterator expired mid-shard.
    AfterSequence(SequenceNumber),
}

/// One GetRecords answer.
#[derive(Debug, Clone)]
pub struct ReadResult<R> {
    pub records: Vec<R>,
    /// `None` once a closed shard is read to its end.
    pub next_iterator: Option<String>,
    /// How far behind the tip of the stream the read was (Kinesis only).
    pub millis_behind_latest: Option<i64>,
    /// KPL user records dropped from `records` because their hash key is another
    /// shard's (after a reshard, a producer with a stale shard map put them here).
    pub outside_hash_range: u64,
}

/// A record a consumer can checkpoint.
pub trait StreamRecord {
    fn position(&self) -> &RecordPosition;
    /// Bytes of payload, for metrics and batching.
    fn size_bytes(&self) -> usize;
}

/// A stream: Kinesis Data Streams or DynamoDB Streams.
pub trait Source: Clone + Send + Sync + 'static {
    type Record: StreamRecord + Clone + Send + Sync + 'static;

    /// Every shard the stream still has (open, and closed within retention).
    fn list_shards(&self) -> impl Future<Output = Result<Vec<Shard>, AwsError>> + Send;

    /// An iterator for `shard_id` at `start`.
    fn shard_iterator(
        &self,
        shard_id: &str,
        start: &StartPosition,
    ) -> impl Future<Output = Result<String, ReadError>> + Send;

    /// Up to `limit` records from `iterator`.
    fn read(
        &self,
        shard_id: &str,
        iterator: &str,
        limit: i32,
    ) -> impl Future<Output = Result<ReadResult<Self::Record>, ReadError>> + Send;

    /// The most records one read may ask for.
    fn max_read_limit(&self) -> i32;

    /// A name for logs.
    fn describe(&self) -> String;
}
