//! Wall-clock time as the pipeline stores it: integer milliseconds or seconds since the epoch.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the epoch (0 if the clock is before 1970).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Seconds since the epoch, as DynamoDB TTL attributes want them.
pub fn now_secs() -> i64 {
    now_ms() / 1000
}
