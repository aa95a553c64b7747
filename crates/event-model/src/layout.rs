//! Where objects go in the bucket. Pure functions of their inputs, so a retry of a
//! batch writes the same key.

use jiff::Timestamp;
use jiff::tz::TimeZone;

/// The two kinds of batch files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchKind {
    /// Valid events, loaded into the warehouse.
    Events,
    /// Rejected records with their reasons.
    Errors,
}

impl BatchKind {
    pub fn prefix(self) -> &'static str {
        match self {
            BatchKind::Events => "events",
            BatchKind::Errors => "errors",
        }
    }
}

/// `<prefix>/YYYY/MM/DD/HH/<first>-<last>.gzip`, the hour (UTC) of `arrival_ms`.
pub fn batch_key(kind: BatchKind, arrival_ms: i64, first_sequence: &str, last_sequence: &str) -> String {
    format!(
        "{}/{first_sequence}-{last_sequence}.gzip",
        hour_folder(kind, arrival_ms)
    )
}

/// `errors/YYYY/MM/DD/HH/<first>-<last>.<application>.gzip`: records that another
/// reader of a stream than the s3-connector quarantined (the player-state worker's
/// Snowplow lines and writes DynamoDB refused). The application keeps its files apart
/// from the s3-connector's, which may cover the same sequence numbers.
pub fn quarantine_key(application: &str, arrival_ms: i64, first_sequence: &str, last_sequence: &str) -> String {
    format!(
        "{}/{first_sequence}-{last_sequence}.{application}.gzip",
        hour_folder(BatchKind::Errors, arrival_ms)
    )
}

/// The hour folders (`<prefix>/YYYY/MM/DD/HH/`) that hold the batch files of `kind`
/// with records that arrived in `[since_ms, until_ms)`, oldest first: every hour the
/// range touches and the hour before it, since a file is filed under the hour of its
/// first record and may hold records of the next hour. None for an empty range.
pub fn hour_prefixes(kind: BatchKind, since_ms: i64, until_ms: i64) -> Vec<String> {
    const HOUR_MS: i64 = 3_600_000;
    let mut prefixes = Vec::new();
    if since_ms >= until_ms {
        return prefixes;
    }
    let mut hour = since_ms.div_euclid(HOUR_MS) - 1;
    while hour.saturating_mul(HOUR_MS) < until_ms {
        prefixes.push(format!("{}/", hour_folder(kind, hour.saturating_mul(HOUR_MS))));
        hour += 1;
    }
    prefixes
}

/// `<prefix>/YYYY/MM/DD/HH`, the hour (UTC) of `arrival_ms`.
fn hour_folder(kind: BatchKind, arrival_ms: i64) -> String {
    let time = Timestamp::from_millisecond(arrival_ms)
        .unwrap_or(if arrival_ms < 0 { Timestamp::MIN } else { Timestamp::MAX })
        .to_zoned(TimeZone::UTC);
    format!(
        "{}/{:04}/{:02}/{:02}/{:02}",
        kind.prefix(),
        time.year(),
        time.month(),
        time.day(),
        time.hour()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_range_is_every_hour_folder_it_touches() {
        // 2024-02-29T23:30Z to 2024-03-01T01:00Z: two hours (the end is exclusive), and
        // the hour before, whose last file may hold records of 23:00 onwards.
        assert_eq!(
            hour_prefixes(BatchKind::Events, 1_709_249_400_000, 1_709_254_800_000),
            [
                "events/2024/02/29/22/",
                "events/2024/02/29/23/",
                "events/2024/03/01/00/"
            ]
        );
        assert_eq!(
            hour_prefixes(BatchKind::Errors, 1_709_249_400_000, 1_709_249_400_001),
            ["errors/2024/02/29/22/", "errors/2024/02/29/23/"]
        );
        assert!(hour_prefixes(BatchKind::Events, 10, 10).is_empty());
        assert!(hour_prefixes(BatchKind::Events, 10, 0).is_empty());
    }

    #[test]
    fn keys_use_the_utc_hour_of_arrival() {
        // 2024-02-29T23:59:59.999Z
        assert_eq!(
            batch_key(BatchKind::Events, 1_709_251_199_999, "49", "51"),
            "events/2024/02/29/23/49-51.gzip"
        );
        assert_eq!(
            batch_key(BatchKind::Errors, 1_709_251_200_000, "1", "1"),
            "errors/2024/03/01/00/1-1.gzip"
        );
        assert_eq!(
            batch_key(BatchKind::Events, 0, "a", "b"),
            "events/1970/01/01/00/a-b.gzip"
        );
        assert_eq!(
            quarantine_key("level-state", 1_709_251_200_000, "7", "9"),
            "errors/2024/03/01/00/7-9.level-state.gzip"
        );
    }

    proptest::proptest! {
        #[test]
        fn keys_are_a_pure_function(ms in 0i64..4_102_444_800_000, first in "[0-9]{1,56}", last in "[0-9]{1,56}") {
            let key = batch_key(BatchKind::Events, ms, &first, &last);
            proptest::prop_assert_eq!(&key, &batch_key(BatchKind::Events, ms, &first, &last));
            let parts: Vec<&str> = key.split('/').collect();
            proptest::prop_assert_eq!(parts.len(), 6);
            proptest::prop_assert_eq!(parts[0], "events");
            let expected_suffix = format!("{first}-{last}.gzip");
            proptest::prop_assert_eq!(parts[5], expected_suffix.as_str());
            let hour_start = ms - ms.rem_euclid(3_600_000);
            // Every instant of one hour maps to the same folder.
            let folder = |k: &str| k.rsplit_once('/').map(|(f, _)| f.to_string());
            proptest::prop_assert_eq!(folder(&key), folder(&batch_key(BatchKind::Events, hour_start, &first, &last)));
        }
    }
}
