//! One line of an `errors/` file: a rejected record, why, and its raw bytes.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

/// A rejected record as stored under `errors/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedRecord {
    /// Machine-readable reason (`Reason::as_str`, or a KPL reason such as `kpl_bad_checksum`).
    pub reason: String,
    /// The field to blame, when there is one.
    pub field: Option<String>,
    /// Human-readable detail.
    pub detail: String,
    pub shard: String,
    pub sequence: String,
    pub subsequence: u64,
    /// Arrival time in the stream, ms since the epoch.
    pub arrival: i64,
    /// The record's bytes exactly as they arrived.
    pub raw_base64: String,
}

impl RejectedRecord {
    pub fn raw(&self) -> Result<Vec<u8>, base64::DecodeError> {
        STANDARD.decode(&self.raw_base64)
    }

    pub fn encode_raw(raw: &[u8]) -> String {
        STANDARD.encode(raw)
    }

    /// Appends the record as one JSON line.
    pub fn write_json_line(&self, out: &mut Vec<u8>) {
        serde_json::to_writer(&mut *out, self).expect("strings and integers always serialize");
        out.push(b'\n');
    }
}
