//! DynamoDB Streams as a [`Source`].
//!
//! AWS allows at most two simultaneous readers per DynamoDB stream shard. Within one
//! lease application a shard has one reader (its lease holder); the pipeline runs a
//! single application (`level-state`) on PlayerState's stream, so at most one reader
//! per shard plus one briefly overlapping during a lease handover stays within the
//! limit. Do not point a second application at the same stream.

use std::collections::HashMap;

use aws_sdk_dynamodbstreams::Client;
use aws_sdk_dynamodbstreams::operation::get_records::GetRecordsError;
use aws_sdk_dynamodbstreams::operation::get_shard_iterator::GetShardIteratorError;
use aws_sdk_dynamodbstreams::types::{AttributeValue, OperationType, ShardIteratorType};

use crate::error::{AwsError, ErrorKind, ReadError};
use crate::position::{RecordPosition, SequenceNumber};
use crate::source::{ReadResult, Shard, Source, StartPosition, StreamRecord};

/// The IAM actions of this module's calls (DescribeTable finds the table's stream).
pub const IAM_ACTIONS: &[&str] = &[
    "dynamodb:DescribeTable",
    "dynamodb:DescribeStream",
    "dynamodb:GetShardIterator",
    "dynamodb:GetRecords",
];

/// GetRecords on DynamoDB Streams returns at most 1,000 records per call.
pub const MAX_RECORDS_PER_READ: i32 = 1_000;

/// What happened to an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Insert,
    Modify,
    Remove,
}

/// One change record.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeRecord {
    pub position: RecordPosition,
    pub kind: ChangeKind,
    pub keys: HashMap<String, AttributeValue>,
    pub old_image: Option<HashMap<String, AttributeValue>>,
    pub new_image: Option<HashMap<String, AttributeValue>>,
    /// Approximate time of the change, in milliseconds since the epoch.
    pub approximate_creation_ms: i64,
    pub size_bytes: usize,
}

impl StreamRecord for ChangeRecord {
    fn position(&self) -> &RecordPosition {
        &self.position
    }
    fn size_bytes(&self) -> usize {
        self.size_bytes
    }
}

/// The stream of one DynamoDB table.
#[derive(Debug, Clone)]
pub struct DynamoDbStreamSource {
    client: Client,
    stream_arn: String,
}

impl DynamoDbStreamSource {
    /// The stream with this ARN.
    pub fn new(client: Client, stream_arn: &str) -> Self {
        Self {
            client,
            stream_arn: stream_arn.to_string(),
        }
    }

    /// The latest stream of `table`, found through DescribeTable.
    pub async fn for_table(dynamodb: &aws_sdk_dynamodb::Client, client: Client, table: &str) -> Result<Self, AwsError> {
        let output = dynamodb
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("dynamodb:DescribeTable", e))?;
        let arn = output.table().and_then(|t| t.latest_stream_arn()).ok_or_else(|| {
            AwsError::new(
                "dynamodb:DescribeTable",
                ErrorKind::Fatal,
                format!("table {table} has no stream"),
            )
        })?;
        Ok(Self::new(client, arn))
    }

    pub fn stream_arn(&self) -> &str {
        &self.stream_arn
    }
}

impl Source for DynamoDbStreamSource {
    type Record = ChangeRecord;

    async fn list_shards(&self) -> Result<Vec<Shard>, AwsError> {
        let mut shards = Vec::new();
        let mut start: Option<String> = None;
        loop {
            let output = self
                .client
                .describe_stream()
                .stream_arn(&self.stream_arn)
                .set_exclusive_start_shard_id(start.take())
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("dynamodb:DescribeStream", e))?;
            let Some(description) = output.stream_description() else {
                break;
            };
            for shard in description.shards() {
                let Some(id) = shard.shard_id() else { continue };
                shards.push(Shard {
                    hash_range: None,
                    id: id.to_string(),
                    parent_ids: shard.parent_shard_id().map(|p| vec![p.to_string()]).unwrap_or_default(),
                    closed: shard
                        .sequence_number_range()
                        .and_then(|r| r.ending_sequence_number())
                        .is_some(),
                });
            }
            match description.last_evaluated_shard_id() {
                Some(last) if !last.is_empty() => start = Some(last.to_string()),
                _ => break,
            }
        }
        Ok(shards)
    }

    async fn shard_iterator(&self, shard_id: &str, start: &StartPosition) -> Result<String, ReadError> {
        let request = self
            .client
            .get_shard_iterator()
            .stream_arn(&self.stream_arn)
            .shard_id(shard_id);
        let request = match start {
            // DynamoDB Streams has no AT_TIMESTAMP; a stream keeps 24 hours, so start at the oldest.
            StartPosition::TrimHorizon | StartPosition::AtTimestamp(_) => {
                request.shard_iterator_type(ShardIteratorType::TrimHorizon)
            }
            StartPosition::Latest => request.shard_iterator_type(ShardIteratorType::Latest),
            StartPosition::AtSequence(sequence) => request
                .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
                .sequence_number(sequence.as_str()),
            StartPosition::AfterSequence(sequence) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .sequence_number(sequence.as_str()),
        };
        let output = request.send().await.map_err(|error| match error.as_service_error() {
            Some(GetShardIteratorError::TrimmedDataAccessException(_)) => {
                ReadError::Trimmed(AwsError::from_sdk("dynamodb:GetShardIterator", error))
            }
            Some(GetShardIteratorError::ResourceNotFoundException(_)) => {
                ReadError::ShardNotFound(AwsError::from_sdk("dynamodb:GetShardIterator", error))
            }
            _ => AwsError::from_sdk("dynamodb:GetShardIterator", error).into(),
        })?;
        output.shard_iterator().map(str::to_string).ok_or_else(|| {
            AwsError::new(
                "dynamodb:GetShardIterator",
                ErrorKind::Transient,
                "no iterator in the answer",
            )
            .into()
        })
    }

    async fn read(&self, _shard_id: &str, iterator: &str, limit: i32) -> Result<ReadResult<ChangeRecord>, ReadError> {
        let output = self
            .client
            .get_records()
            .shard_iterator(iterator)
            .limit(limit.clamp(1, MAX_RECORDS_PER_READ))
            .send()
            .await
            .map_err(|error| match error.as_service_error() {
                Some(GetRecordsError::ExpiredIteratorException(_)) => ReadError::IteratorExpired,
                Some(GetRecordsError::TrimmedDataAccessException(_)) => {
                    ReadError::Trimmed(AwsError::from_sdk("dynamodb:GetRecords", error))
                }
                Some(GetRecordsError::ResourceNotFoundException(_)) => {
                    ReadError::ShardNotFound(AwsError::from_sdk("dynamodb:GetRecords", error))
                }
                _ => AwsError::from_sdk("dynamodb:GetRecords", error).into(),
            })?;
        let mut records = Vec::with_capacity(output.records().len());
        for record in output.records() {
            let Some(change) = record.dynamodb() else { continue };
            let text = change.sequence_number().unwrap_or_default();
            let sequence = SequenceNumber::parse(text).map_err(|_| {
                AwsError::new(
                    "dynamodb:GetRecords",
                    ErrorKind::Fatal,
                    format!("invalid sequence number {text:?}"),
                )
            })?;
            let kind = match record.event_name() {
                Some(OperationType::Insert) => ChangeKind::Insert,
                Some(OperationType::Remove) => ChangeKind::Remove,
                _ => ChangeKind::Modify,
            };
            records.push(ChangeRecord {
                position: RecordPosition {
                    sequence,
                    subsequence: 0,
                },
                kind,
                keys: change.keys().cloned().unwrap_or_default(),
                old_image: change.old_image().cloned(),
                new_image: change.new_image().cloned(),
                approximate_creation_ms: change
                    .approximate_creation_date_time()
                    .and_then(|t| t.to_millis().ok())
                    .unwrap_or_default(),
                size_bytes: change.size_bytes().unwrap_or_default().max(0) as usize,
            });
        }
        Ok(ReadResult {
            records,
            next_iterator: output.next_shard_iterator().map(str::to_string),
            millis_behind_latest: None,
            outside_hash_range: 0,
        })
    }

    fn max_read_limit(&self) -> i32 {
        MAX_RECORDS_PER_READ
    }

    fn describe(&self) -> String {
        format!("dynamodb-stream:{}", self.stream_arn)
    }
}
