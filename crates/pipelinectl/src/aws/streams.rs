//! Kinesis calls: the shard map `generate` aggregates by, its PutRecords batches, and
//! the one PutRecord of each pointer `dead-letters redrive` sends again.
//!
//! Each shard takes at most 1000 records and 1 MiB a second; over that, PutRecords
//! fails the entries beyond it (`ProvisionedThroughputExceededException`) and PutRecord
//! fails as a whole. Retrying is the caller's.

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use pipeline_runtime::{AwsError, ErrorKind};

const LIST_SHARDS: &str = "kinesis:ListShards";
const PUT_RECORDS: &str = "kinesis:PutRecords";
const PUT_RECORD: &str = "kinesis:PutRecord";

/// The IAM actions the functions of this module need.
pub const IAM_ACTIONS: &[&str] = &[LIST_SHARDS, PUT_RECORDS, PUT_RECORD];

/// PutRecords takes at most 500 records per call,
pub const MAX_RECORDS: usize = 500;
/// and at most 5 MiB per call, data and partition keys counted,
pub const MAX_BYTES: usize = 5 * 1024 * 1024;
/// and, like PutRecord, at most 1 MiB per record, data and partition key counted.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;

/// One shard's hash keys, as ListShards describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardRange {
    pub first: u128,
    pub last: u128,
    pub id: String,
    /// Not closed by a split or merge: new records can go there.
    pub open: bool,
}

impl ShardRange {
    pub fn holds(&self, hash: u128) -> bool {
        self.first <= hash && hash <= self.last
    }
}

/// ListShards of `stream`, every page: the open shards and the closed ones still within
/// retention. A page holds at most 1000 shards; the next one is asked for by its token
/// alone (ListShards refuses the stream name beside a token).
pub async fn list_shards(kinesis: &aws_sdk_kinesis::Client, stream: &str) -> Result<Vec<ShardRange>, AwsError> {
    let mut shards = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let request = match token.take() {
            Some(token) => kinesis.list_shards().next_token(token),
            None => kinesis.list_shards().stream_name(stream),
        };
        let output = request.send().await.map_err(|e| AwsError::from_sdk(LIST_SHARDS, e))?;
        for shard in output.shards() {
            let open = shard
                .sequence_number_range()
                .is_some_and(|r| r.ending_sequence_number().is_none());
            let range = shard.hash_key_range().and_then(|r| {
                Some((
                    r.starting_hash_key().parse::<u128>().ok()?,
                    r.ending_hash_key().parse::<u128>().ok()?,
                ))
            });
            if let Some((first, last)) = range {
                shards.push(ShardRange {
                    first,
                    last,
                    id: shard.shard_id().to_string(),
                    open,
                });
            }
        }
        match output.next_token() {
            Some(next) if !next.is_empty() => token = Some(next.to_string()),
            _ => return Ok(shards),
        }
    }
}

/// One record of a PutRecords call.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub partition_key: &'a str,
    /// Routes the record instead of the partition key's hash.
    pub explicit_hash_key: Option<&'a str>,
    pub data: &'a [u8],
}

impl Entry<'_> {
    /// What the API counts against its limits.
    pub fn size(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }
}

/// What PutRecords did with one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Stored, in this shard.
    Put { shard_id: Option<String> },
    /// Not stored (throttled or an internal failure): send it again.
    Failed { error_code: String },
}

/// PutRecords of `entries` on `stream`: one outcome per entry, in their order, since
/// a call that succeeds may still fail some entries. Entries beyond the API's limits
/// ([`MAX_RECORDS`], [`MAX_BYTES`], [`MAX_RECORD_BYTES`]) fail the call before it is made.
pub async fn put_records(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    entries: &[Entry<'_>],
) -> Result<Vec<Outcome>, AwsError> {
    let invalid = |what: String| AwsError::new(PUT_RECORDS, ErrorKind::Fatal, what);
    if entries.len() > MAX_RECORDS {
        return Err(invalid(format!("{} records in one call", entries.len())));
    }
    let bytes: usize = entries.iter().map(Entry::size).sum();
    if bytes > MAX_BYTES {
        return Err(invalid(format!("{bytes} bytes in one call")));
    }
    if let Some(entry) = entries.iter().find(|e| e.size() > MAX_RECORD_BYTES) {
        return Err(invalid(format!("a record of {} bytes", entry.size())));
    }
    let records = entries
        .iter()
        .map(|e| {
            PutRecordsRequestEntry::builder()
                .partition_key(e.partition_key)
                .set_explicit_hash_key(e.explicit_hash_key.map(str::to_string))
                .data(Blob::new(e.data))
                .build()
                .map_err(|e| invalid(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let output = kinesis
        .put_records()
        .stream_name(stream)
        .set_records(Some(records))
        .send()
        .await
        .map_err(|e| AwsError::from_sdk(PUT_RECORDS, e))?;
    Ok(output
        .records()
        .iter()
        .map(|result| match result.error_code() {
            Some(code) => Outcome::Failed {
                error_code: code.to_string(),
            },
            None => Outcome::Put {
                shard_id: result.shard_id().map(str::to_string),
            },
        })
        .collect())
}

/// PutRecord of one record of at most [`MAX_RECORD_BYTES`] (data and partition key)
/// on `stream`, routed by its partition key.
pub async fn put_record(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    partition_key: &str,
    data: &[u8],
) -> Result<(), AwsError> {
    kinesis
        .put_record()
        .stream_name(stream)
        .partition_key(partition_key)
        .data(Blob::new(data))
        .send()
        .await
        .map_err(|e| AwsError::from_sdk(PUT_RECORD, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client that is never reached: the calls below fail before sending.
    fn client() -> aws_sdk_kinesis::Client {
        let config = aws_sdk_kinesis::Config::builder()
            .behavior_version(aws_sdk_kinesis::config::BehaviorVersion::latest())
            .region(aws_sdk_kinesis::config::Region::new("eu-west-1"))
            .build();
        aws_sdk_kinesis::Client::from_conf(config)
    }

    #[tokio::test]
    async fn a_batch_beyond_the_api_limits_fails_before_the_call() {
        let small = [0u8; 10];
        let large = vec![0u8; MAX_RECORD_BYTES];
        let entry = |data| Entry {
            partition_key: "k",
            explicit_hash_key: None,
            data,
        };
        let too_many = vec![entry(&small[..]); MAX_RECORDS + 1];
        let too_big = vec![entry(&large[..MAX_RECORD_BYTES - 1]); 6];
        let one_too_big = vec![entry(&large[..])];
        let refused = [
            (too_many, "501 records in one call".to_string()),
            (too_big, format!("{} bytes in one call", 6 * MAX_RECORD_BYTES)),
            (one_too_big, format!("a record of {} bytes", MAX_RECORD_BYTES + 1)),
        ];
        for (entries, why) in refused {
            let error = put_records(&client(), "s", &entries).await.expect_err("refused");
            assert_eq!(
                (error.operation, error.kind),
                (PUT_RECORDS, ErrorKind::Fatal),
                "{error}"
            );
            assert_eq!(error.message, why);
        }
    }

    #[test]
    fn a_range_holds_both_its_ends() {
        let range = ShardRange {
            first: 10,
            last: 20,
            id: "s".into(),
            open: true,
        };
        assert!(range.holds(10) && range.holds(20));
        assert!(!range.holds(9) && !range.holds(21));
    }
}
