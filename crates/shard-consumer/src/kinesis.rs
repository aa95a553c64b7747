//! Kinesis Data Streams as a [`Source`], with KPL de-aggregation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::operation::get_records::GetRecordsError;
use aws_sdk_kinesis::operation::get_shard_iterator::GetShardIteratorError;
use aws_sdk_kinesis::primitives::DateTime;
use aws_sdk_kinesis::types::ShardIteratorType;
use bytes::Bytes;

use crate::error::{AwsError, ErrorKind, ReadError};
use crate::kpl::{self, AggregateError};
use crate::position::{RecordPosition, SequenceNumber};
use crate::source::{ReadResult, Shard, Source, StartPosition, StreamRecord};

/// The IAM actions of this module's calls.
pub const IAM_ACTIONS: &[&str] = &["kinesis:ListShards", "kinesis:GetShardIterator", "kinesis:GetRecords"];

/// GetRecords returns at most 10,000 records per call.
pub const MAX_RECORDS_PER_READ: i32 = 10_000;

/// One user record from Kinesis: a plain record, or one record of a KPL aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KinesisRecord {
    pub position: RecordPosition,
    pub partition_key: String,
    pub explicit_hash_key: Option<String>,
    /// The user record's bytes; for an invalid aggregate, the whole raw record.
    pub data: Bytes,
    /// When Kinesis accepted the record, in milliseconds since the epoch.
    pub arrival_ms: i64,
    /// The record came out of a KPL aggregate.
    pub aggregated: bool,
    /// The record carried the KPL magic but could not be read: deliver it, never drop it.
    pub invalid: Option<AggregateError>,
}

impl StreamRecord for KinesisRecord {
    fn position(&self) -> &RecordPosition {
        &self.position
    }
    fn size_bytes(&self) -> usize {
        self.data.len()
    }
}

/// Turns one stream record into its user records (pure; what the benchmark measures).
pub fn decode_record(
    sequence: SequenceNumber,
    partition_key: &str,
    data: Bytes,
    arrival_ms: i64,
    into: &mut Vec<KinesisRecord>,
) {
    let whole = |data: Bytes, invalid: Option<AggregateError>| KinesisRecord {
        position: RecordPosition {
            sequence: sequence.clone(),
            subsequence: 0,
        },
        partition_key: partition_key.to_string(),
        explicit_hash_key: None,
        aggregated: invalid.is_some(),
        data,
        arrival_ms,
        invalid,
    };
    match kpl::deaggregate(&data) {
        Ok(None) => into.push(whole(data, None)),
        Err(error) => into.push(whole(data, Some(error))),
        Ok(Some(records)) => into.extend(records.into_iter().enumerate().map(|(index, record)| KinesisRecord {
            position: RecordPosition {
                sequence: sequence.clone(),
                subsequence: index as u64,
            },
            partition_key: record.partition_key,
            explicit_hash_key: record.explicit_hash_key,
            data: record.data,
            arrival_ms,
            aggregated: true,
            invalid: None,
        })),
    }
}

/// Drops the KPL user records whose hash key falls outside `range` (a shard's); returns
/// how many. A KPL with a stale shard map aggregated them here after a reshard; it sends
/// them again to their own shard once Kinesis answers with another shard than it
/// predicted, so processing these copies would process them twice, and out of their
/// partition key's order (the Java KCL drops them too). Plain records are where Kinesis
/// routed them and are never second-guessed.
pub fn drop_outside_hash_range(records: &mut Vec<KinesisRecord>, (first, last): (u128, u128)) -> u64 {
    let before = records.len();
    records.retain(|record| {
        if !record.aggregated || record.invalid.is_some() {
            return true;
        }
        let hash_key = kpl::effective_hash_key(&record.partition_key, record.explicit_hash_key.as_deref());
        let inside = first <= hash_key && hash_key <= last;
        if !inside {
            tracing::debug!(sequence = %record.position, hash_key, "KPL user record outside the shard's hash range");
        }
        inside
    });
    (before - records.len()) as u64
}

/// A Kinesis data stream.
#[derive(Debug, Clone)]
pub struct KinesisSource {
    client: Client,
    stream_name: String,
    /// Each shard's hash key range, as last listed.
    ranges: Arc<Mutex<HashMap<String, (u128, u128)>>>,
}

impl KinesisSource {
    pub fn new(client: Client, stream_name: &str) -> Self {
        Self {
            client,
            stream_name: stream_name.to_string(),
            ranges: Arc::default(),
        }
    }

    fn range_of(&self, shard_id: &str) -> Option<(u128, u128)> {
        self.ranges
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(shard_id)
            .copied()
    }
}

fn invalid_sequence(operation: &'static str, text: &str) -> AwsError {
    AwsError::new(operation, ErrorKind::Fatal, format!("invalid sequence number {text:?}"))
}

impl Source for KinesisSource {
    type Record = KinesisRecord;

    async fn list_shards(&self) -> Result<Vec<Shard>, AwsError> {
        let mut shards = Vec::new();
        let mut next_token: Option<String> = None;
        loop {
            // ListShards takes the stream name only on the first page.
            let request = match next_token.take() {
                Some(token) => self.client.list_shards().next_token(token),
                None => self.client.list_shards().stream_name(&self.stream_name),
            };
            let output = request
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("kinesis:ListShards", e))?;
            for shard in output.shards() {
                let parent_ids: Vec<String> = [shard.parent_shard_id(), shard.adjacent_parent_shard_id()]
                    .into_iter()
                    .flatten()
                    .map(str::to_string)
                    .collect();
                let hash_range = shard.hash_key_range().and_then(|r| {
                    Some((
                        r.starting_hash_key().parse::<u128>().ok()?,
                        r.ending_hash_key().parse::<u128>().ok()?,
                    ))
                });
                if let Some(range) = hash_range {
                    self.ranges
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert(shard.shard_id().to_string(), range);
                }
                shards.push(Shard {
                    hash_range,
                    id: shard.shard_id().to_string(),
                    parent_ids,
                    closed: shard
                        .sequence_number_range()
                        .and_then(|r| r.ending_sequence_number())
                        .is_some(),
                });
            }
            match output.next_token() {
                Some(token) if !token.is_empty() => next_token = Some(token.to_string()),
                _ => break,
            }
        }
        Ok(shards)
    }

    async fn shard_iterator(&self, shard_id: &str, start: &StartPosition) -> Result<String, ReadError> {
        let request = self
            .client
            .get_shard_iterator()
            .stream_name(&self.stream_name)
            .shard_id(shard_id);
        let request = match start {
            StartPosition::TrimHorizon => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
            StartPosition::Latest => request.shard_iterator_type(ShardIteratorType::Latest),
            StartPosition::AtTimestamp(ms) => request
                .shard_iterator_type(ShardIteratorType::AtTimestamp)
                .timestamp(DateTime::from_millis(*ms)),
            StartPosition::AtSequence(sequence) => request
                .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
                .starting_sequence_number(sequence.as_str()),
            StartPosition::AfterSequence(sequence) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .starting_sequence_number(sequence.as_str()),
        };
        let output = request.send().await.map_err(|error| {
            let gone = matches!(
                error.as_service_error(),
                Some(GetShardIteratorError::ResourceNotFoundException(_))
            );
            let error = AwsError::from_sdk("kinesis:GetShardIterator", error);
            if gone {
                ReadError::ShardNotFound(error)
            } else {
                error.into()
            }
        })?;
        output.shard_iterator().map(str::to_string).ok_or_else(|| {
            AwsError::new(
                "kinesis:GetShardIterator",
                ErrorKind::Transient,
                "no iterator in the answer",
            )
            .into()
        })
    }

    async fn read(&self, shard_id: &str, iterator: &str, limit: i32) -> Result<ReadResult<KinesisRecord>, ReadError> {
        let output = self
            .client
            .get_records()
            .shard_iterator(iterator)
            .limit(limit.clamp(1, MAX_RECORDS_PER_READ))
            .send()
            .await
            .map_err(|error| match error.as_service_error() {
                Some(GetRecordsError::ExpiredIteratorException(_)) => ReadError::IteratorExpired,
                Some(GetRecordsError::ResourceNotFoundException(_)) => {
                    ReadError::ShardNotFound(AwsError::from_sdk("kinesis:GetRecords", error))
                }
                _ => AwsError::from_sdk("kinesis:GetRecords", error).into(),
            })?;
        let mut records = Vec::with_capacity(output.records().len());
        for record in output.records() {
            let sequence = SequenceNumber::parse(record.sequence_number())
                .map_err(|_| invalid_sequence("kinesis:GetRecords", record.sequence_number()))?;
            let arrival_ms = record
                .approximate_arrival_timestamp()
                .and_then(|t| t.to_millis().ok())
                .unwrap_or_default();
            let data = Bytes::copy_from_slice(record.data().as_ref());
            decode_record(
                sequence,
                record.partition_key().unwrap_or_default(),
                data,
                arrival_ms,
                &mut records,
            );
        }
        let outside_hash_range = match self.range_of(shard_id) {
            Some(range) => drop_outside_hash_range(&mut records, range),
            None => 0,
        };
        Ok(ReadResult {
            records,
            next_iterator: output.next_shard_iterator().map(str::to_string),
            millis_behind_latest: output.millis_behind_latest(),
            outside_hash_range,
        })
    }

    fn max_read_limit(&self) -> i32 {
        MAX_RECORDS_PER_READ
    }

    fn describe(&self) -> String {
        format!("kinesis:{}", self.stream_name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_aggregated_records_get_positions() {
        let mut out = Vec::new();
        let seq = |s: &str| SequenceNumber::parse(s).expect("digits");
        decode_record(seq("100"), "pk", Bytes::from_static(b"{}"), 5, &mut out);
        let aggregate = kpl::aggregate(&[
            ("a".into(), Bytes::from_static(b"1")),
            ("b".into(), Bytes::from_static(b"2")),
        ]);
        decode_record(seq("101"), "ignored", aggregate, 6, &mut out);
        let positions: Vec<String> = out.iter().map(|r| r.position.to_string()).collect();
        assert_eq!(positions, ["100/0", "101/0", "101/1"]);
        assert_eq!(out[2].partition_key, "b");
        assert!(out[1].aggregated && !out[0].aggregated);
    }

    #[test]
    fn user_records_of_another_shards_hash_range_are_dropped() {
        let aggregate = kpl::aggregate(&[
            ("a".into(), Bytes::from_static(b"1")),
            ("b".into(), Bytes::from_static(b"2")),
        ]);
        let mut out = Vec::new();
        decode_record(SequenceNumber::parse("9").expect("digits"), "a", aggregate, 0, &mut out);
        let hash_a = kpl::effective_hash_key("a", None);
        let hash_b = kpl::effective_hash_key("b", None);
        assert_ne!(hash_a, hash_b);
        // A shard that holds "a"'s hash key only.
        assert_eq!(drop_outside_hash_range(&mut out, (hash_a, hash_a)), 1);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].partition_key, "a");
        assert_eq!(out[0].position.to_string(), "9/0");
        // Plain records are Kinesis's own routing: never second-guessed.
        let mut plain = Vec::new();
        decode_record(
            SequenceNumber::parse("10").expect("digits"),
            "b",
            Bytes::from_static(b"{}"),
            0,
            &mut plain,
        );
        assert_eq!(drop_outside_hash_range(&mut plain, (hash_a, hash_a)), 0);
        // An explicit hash key decides over the partition key.
        assert_eq!(kpl::effective_hash_key("a", Some("42")), 42);
        // The MD5 of the empty partition key, read as a big-endian number.
        assert_eq!(
            kpl::effective_hash_key("", None),
            0xd41d8cd98f00b204e9800998ecf8427e_u128
        );
    }

    #[test]
    fn a_corrupt_aggregate_is_delivered_as_invalid_with_its_bytes() {
        let mut bytes = kpl::aggregate(&[("a".into(), Bytes::from_static(b"1"))]).to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xFF;
        let mut out = Vec::new();
        decode_record(
            SequenceNumber::parse("7").expect("digits"),
            "pk",
            Bytes::from(bytes.clone()),
            0,
            &mut out,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].invalid, Some(AggregateError::BadChecksum));
        assert_eq!(out[0].data.as_ref(), bytes.as_slice());
    }
}
