//! De-aggregation of records written by the Kinesis Producer Library (KPL).
//!
//! An aggregated record is `F3 89 9A C2` ‖ protobuf `AggregatedRecord` ‖ MD5 of the
//! protobuf bytes. Each inner record becomes one user record with the stream record's
//! sequence number and its index as the subsequence number. A record that carries the
//! magic but fails the checksum or the protobuf decode is reported as invalid (the
//! Java KCL passes it on as if it were plain data; a corrupted aggregate is not data).

use bytes::Bytes;
use md5::{Digest, Md5};

/// The four bytes every KPL aggregate starts with.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];
const DIGEST_LEN: usize = 16;

#[derive(Clone, PartialEq, prost::Message)]
struct AggregatedRecord {
    #[prost(string, repeated, tag = "1")]
    partition_key_table: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    explicit_hash_key_table: Vec<String>,
    #[prost(message, repeated, tag = "3")]
    records: Vec<InnerRecord>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct InnerRecord {
    #[prost(uint64, required, tag = "1")]
    partition_key_index: u64,
    #[prost(uint64, optional, tag = "2")]
    explicit_hash_key_index: Option<u64>,
    #[prost(bytes = "bytes", required, tag = "3")]
    data: Bytes,
    #[prost(message, repeated, tag = "4")]
    tags: Vec<Tag>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Tag {
    #[prost(string, required, tag = "1")]
    key: String,
    #[prost(string, optional, tag = "2")]
    value: Option<String>,
}

/// One user record from an aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub partition_key: String,
    pub explicit_hash_key: Option<String>,
    pub data: Bytes,
}

/// Why an aggregate cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AggregateError {
    #[error("KPL aggregate too short for its MD5 trailer ({0} bytes)")]
    TooShort(usize),
    #[error("KPL aggregate MD5 checksum mismatch")]
    BadChecksum,
    #[error("KPL aggregate protobuf does not decode: {0}")]
    BadProtobuf(String),
    #[error("KPL aggregate record {record} refers to missing {table} entry {index}")]
    BadIndex {
        record: usize,
        table: &'static str,
        index: u64,
    },
}

impl AggregateError {
    /// A stable machine-readable reason, for metrics and reject files.
    pub fn reason(&self) -> &'static str {
        match self {
            AggregateError::TooShort(_) => "kpl_too_short",
            AggregateError::BadChecksum => "kpl_bad_checksum",
            AggregateError::BadProtobuf(_) => "kpl_bad_protobuf",
            AggregateError::BadIndex { .. } => "kpl_bad_index",
        }
    }
}

/// The hash key Kinesis routes a record by: its explicit hash key when it has one,
/// else the MD5 of its partition key as a 128-bit big-endian number.
pub fn effective_hash_key(partition_key: &str, explicit_hash_key: Option<&str>) -> u128 {
    if let Some(key) = explicit_hash_key.and_then(|k| k.parse::<u128>().ok()) {
        return key;
    }
    u128::from_be_bytes(Md5::digest(partition_key.as_bytes()).into())
}

/// Whether `data` claims to be a KPL aggregate.
pub fn is_aggregated(data: &[u8]) -> bool {
    data.starts_with(&MAGIC)
}

/// The user records of an aggregate, or `None` when `data` is a plain record.
pub fn deaggregate(data: &Bytes) -> Result<Option<Vec<UserRecord>>, AggregateError> {
    if !is_aggregated(data) {
        return Ok(None);
    }
    if data.len() < MAGIC.len() + DIGEST_LEN {
        return Err(AggregateError::TooShort(data.len()));
    }
    let body = data.slice(MAGIC.len()..data.len() - DIGEST_LEN);
    let trailer = &data[data.len() - DIGEST_LEN..];
    if Md5::digest(&body).as_slice() != trailer {
        return Err(AggregateError::BadChecksum);
    }
    let aggregate =
        <AggregatedRecord as prost::Message>::decode(body).map_err(|e| AggregateError::BadProtobuf(e.to_string()))?;
    let mut records = Vec::with_capacity(aggregate.records.len());
    for (index, inner) in aggregate.records.into_iter().enumerate() {
        let partition_key = usize::try_from(inner.partition_key_index)
            .ok()
            .and_then(|i| aggregate.partition_key_table.get(i))
            .ok_or(AggregateError::BadIndex {
                record: index,
                table: "partition key",
                index: inner.partition_key_index,
            })?
            .clone();
        let explicit_hash_key = match inner.explicit_hash_key_index {
            None => None,
            Some(key_index) => Some(
                usize::try_from(key_index)
                    .ok()
                    .and_then(|i| aggregate.explicit_hash_key_table.get(i))
                    .ok_or(AggregateError::BadIndex {
                        record: index,
                        table: "explicit hash key",
                        index: key_index,
                    })?
                    .clone(),
            ),
        };
        records.push(UserRecord {
            partition_key,
            explicit_hash_key,
            data: inner.data,
        });
    }
    Ok(Some(records))
}

/// Builds an aggregate (what the KPL writes). Used by tests, benchmarks and the data
/// generator's optional aggregation.
pub fn aggregate(records: &[(String, Bytes)]) -> Bytes {
    let mut keys: Vec<String> = Vec::new();
    let mut inner = Vec::with_capacity(records.len());
    for (key, data) in records {
        let index = match keys.iter().position(|k| k == key) {
            Some(i) => i,
            None => {
                keys.push(key.clone());
                keys.len() - 1
            }
        };
        inner.push(InnerRecord {
            partition_key_index: index as u64,
            explicit_hash_key_index: None,
            data: data.clone(),
            tags: Vec::new(),
        });
    }
    let body = prost::Message::encode_to_vec(&AggregatedRecord {
        partition_key_table: keys,
        explicit_hash_key_table: Vec::new(),
        records: inner,
    });
    let mut out = Vec::with_capacity(MAGIC.len() + body.len() + DIGEST_LEN);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&body);
    out.extend_from_slice(&Md5::digest(&body));
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn records(n: usize) -> Vec<(String, Bytes)> {
        (0..n)
            .map(|i| (format!("player-{}", i % 3), Bytes::from(format!("{{\"n\":{i}}}"))))
            .collect()
    }

    #[test]
    fn plain_data_is_not_an_aggregate() {
        assert_eq!(deaggregate(&Bytes::from_static(b"{\"a\":1}")), Ok(None));
        assert_eq!(deaggregate(&Bytes::new()), Ok(None));
    }

    #[test]
    fn an_aggregate_round_trips_with_keys_and_order() {
        let input = records(5);
        let output = deaggregate(&aggregate(&input)).expect("valid").expect("aggregated");
        assert_eq!(output.len(), 5);
        for ((key, data), record) in input.iter().zip(&output) {
            assert_eq!(&record.partition_key, key);
            assert_eq!(&record.data, data);
            assert_eq!(record.explicit_hash_key, None);
        }
    }

    #[test]
    fn a_flipped_byte_fails_the_checksum() {
        let mut bytes = aggregate(&records(3)).to_vec();
        bytes[10] ^= 0x01;
        assert_eq!(deaggregate(&Bytes::from(bytes)), Err(AggregateError::BadChecksum));
    }

    #[test]
    fn garbage_with_a_valid_checksum_fails_the_decode() {
        let body = vec![0xFF_u8; 12];
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&body);
        bytes.extend_from_slice(&Md5::digest(&body));
        let error = deaggregate(&Bytes::from(bytes)).expect_err("bad protobuf");
        assert_eq!(error.reason(), "kpl_bad_protobuf");
    }

    #[test]
    fn a_missing_key_index_is_refused() {
        let body = prost::Message::encode_to_vec(&AggregatedRecord {
            partition_key_table: vec!["a".into()],
            explicit_hash_key_table: vec![],
            records: vec![InnerRecord {
                partition_key_index: 4,
                explicit_hash_key_index: None,
                data: Bytes::from_static(b"x"),
                tags: vec![],
            }],
        });
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&body);
        bytes.extend_from_slice(&Md5::digest(&body));
        assert!(matches!(
            deaggregate(&Bytes::from(bytes)),
            Err(AggregateError::BadIndex { index: 4, .. })
        ));
    }

    #[test]
    fn the_magic_alone_is_too_short() {
        assert_eq!(
            deaggregate(&Bytes::from(MAGIC.to_vec())),
            Err(AggregateError::TooShort(4))
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_after_the_magic_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut bytes = MAGIC.to_vec();
            bytes.extend_from_slice(&tail);
            let _ = deaggregate(&Bytes::from(bytes));
        }

        #[test]
        fn any_records_round_trip(items in proptest::collection::vec(("[a-z0-9]{1,16}", proptest::collection::vec(any::<u8>(), 0..64)), 1..50)) {
            let input: Vec<(String, Bytes)> = items.into_iter().map(|(k, d)| (k, Bytes::from(d))).collect();
            let output = deaggregate(&aggregate(&input)).expect("valid").expect("aggregated");
            prop_assert_eq!(output.len(), input.len());
            for ((key, data), record) in input.iter().zip(&output) {
                prop_assert_eq!(&record.partition_key, key);
                prop_assert_eq!(&record.data, data);
            }
        }
    }
}
