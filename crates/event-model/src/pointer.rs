//! The pointer the s3-connector publishes on the `files` stream for each events file.

use serde::{Deserialize, Serialize};

/// One events file in S3 and what is in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilePointer {
    pub bucket: String,
    pub key: String,
    /// Events in the file.
    pub records: u64,
    /// Size of the object (gzipped), what a Redshift manifest calls `content_length`.
    pub bytes: u64,
    /// Source shard of the `telemetry` stream.
    pub shard: String,
    pub first_sequence: String,
    pub last_sequence: String,
    pub min_event_timestamp: i64,
    pub max_event_timestamp: i64,
}

/// A pointer that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("invalid file pointer: {0}")]
pub struct PointerError(#[from] serde_json::Error);

impl FilePointer {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a pointer of strings and integers always serializes")
    }

    /// Unknown fields are ignored, so a newer connector's pointers still load.
    pub fn from_json(bytes: &[u8]) -> Result<Self, PointerError> {
        Ok(serde_json::from_slice(bytes)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_the_documented_field_names() {
        let pointer = FilePointer {
            bucket: "lake".into(),
            key: "events/2024/01/01/00/1-2.gzip".into(),
            records: 2,
            bytes: 120,
            shard: "shardId-000000000000".into(),
            first_sequence: "1".into(),
            last_sequence: "2".into(),
            min_event_timestamp: 5,
            max_event_timestamp: 9,
        };
        let json: serde_json::Value = serde_json::from_slice(&pointer.to_json()).expect("json");
        for field in [
            "bucket",
            "key",
            "records",
            "bytes",
            "shard",
            "first_sequence",
            "last_sequence",
            "min_event_timestamp",
            "max_event_timestamp",
        ] {
            assert!(json.get(field).is_some(), "{field}");
        }
        assert_eq!(FilePointer::from_json(&pointer.to_json()).expect("parse"), pointer);
        assert!(FilePointer::from_json(b"{\"bucket\":1}").is_err());
    }
}
