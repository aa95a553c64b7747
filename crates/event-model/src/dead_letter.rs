//! A `files` stream record the redshift-connector gave up on: a pointer whose batch file
//! stayed missing or corrupt past the retry window, or a record that is no pointer at
//! all. Kept under `dead-letters/` with why, until an operator redrives it
//! (`pipelinectl dead-letters redrive`) once the cause is fixed.

use serde::{Deserialize, Serialize};

use crate::pointer::FilePointer;

/// The prefix of dead letters in the bucket.
pub const DEAD_LETTER_PREFIX: &str = "dead-letters/";

/// One dead letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The pointer, when the record was one (redrive publishes it again).
    pub pointer: Option<FilePointer>,
    /// The record's bytes as they came, base64, when it was not a pointer.
    pub raw_base64: Option<String>,
    /// Why the load gave up: the error's kind and message.
    pub kind: String,
    pub error: String,
    /// The line of the batch file the warehouse refused, when it named one.
    pub line: Option<u64>,
    /// The `files` stream record: its shard and sequence number.
    pub files_shard: String,
    pub files_sequence: String,
    /// How often the load was tried, and when it failed first and gave up (ms since the epoch).
    pub attempts: u32,
    pub first_failure_ms: i64,
    pub dead_lettered_ms: i64,
}

impl DeadLetter {
    /// `dead-letters/<the events key>.<files sequence>.json` for a pointer,
    /// `dead-letters/invalid/<shard>-<sequence>.json` for a record that is not one. One
    /// object per `files` record: a record given up twice (read again after a crash)
    /// writes one, and a redriven pointer (a new record) that fails again writes a new
    /// one, which the redrive's delete of the old one cannot touch.
    pub fn key(&self) -> String {
        match &self.pointer {
            Some(pointer) => format!("{DEAD_LETTER_PREFIX}{}.{}.json", pointer.key, self.files_sequence),
            None => format!(
                "{DEAD_LETTER_PREFIX}invalid/{}-{}.json",
                self.files_shard, self.files_sequence
            ),
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("strings and integers always serialize")
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(pointer: Option<FilePointer>) -> DeadLetter {
        DeadLetter {
            pointer,
            raw_base64: None,
            kind: "permanent".into(),
            error: "NoSuchKey".into(),
            line: Some(3),
            files_shard: "shardId-000000000001".into(),
            files_sequence: "49".into(),
            attempts: 7,
            first_failure_ms: 1,
            dead_lettered_ms: 2,
        }
    }

    #[test]
    fn one_object_per_file_and_the_json_round_trips() {
        let pointer = FilePointer {
            bucket: "lake".into(),
            key: "events/2026/01/01/00/1-2.gzip".into(),
            records: 2,
            bytes: 120,
            shard: "shardId-000000000000".into(),
            first_sequence: "1".into(),
            last_sequence: "2".into(),
            min_event_timestamp: 5,
            max_event_timestamp: 9,
        };
        let dead = letter(Some(pointer));
        assert_eq!(dead.key(), "dead-letters/events/2026/01/01/00/1-2.gzip.49.json");
        assert_eq!(DeadLetter::from_json(&dead.to_json()).expect("json"), dead);
        assert_eq!(letter(None).key(), "dead-letters/invalid/shardId-000000000001-49.json");
    }
}
