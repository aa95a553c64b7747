//! Points in time on the command line: RFC 3339, `now`, or an age.

use pipeline_runtime::clock::now_ms;

/// A point in time: RFC 3339 (`2026-11-22T10:00:00Z`), `now`, or an age such as
/// `90m`, `24h` or `7d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct When(pub i64);

impl std::str::FromStr for When {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text == "now" {
            return Ok(When(now_ms()));
        }
        if let Ok(time) = text.parse::<jiff::Timestamp>() {
            return Ok(When(time.as_millisecond()));
        }
        let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
        let unit_ms = match unit {
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(format!("{text:?} is not RFC 3339, `now`, or an age like 90m, 24h, 7d")),
        };
        let n: i64 = number
            .parse()
            .map_err(|_| format!("{text:?} has no number before {unit:?}"))?;
        Ok(When(now_ms() - n.saturating_mul(unit_ms)))
    }
}

/// A past point in time, as RFC 3339 only: for a setting whose meaning a run again
/// must keep (`now` or an age would be another time on each run).
pub fn past_instant(text: &str) -> Result<When, String> {
    let time: jiff::Timestamp = text
        .parse()
        .map_err(|_| format!("{text:?} is not an RFC 3339 time like 2026-11-29T10:00:00Z"))?;
    let ms = time.as_millisecond();
    if ms > now_ms() {
        return Err(format!("{text} is in the future"));
    }
    Ok(When(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_now_or_an_age() {
        assert_eq!("2026-01-01T00:00:00Z".parse::<When>(), Ok(When(1_767_225_600_000)));
        let age = "24h".parse::<When>().expect("age").0;
        assert!((now_ms() - 86_400_000 - age).abs() < 5_000);
        assert!("yesterday".parse::<When>().is_err());
        assert!("h".parse::<When>().is_err());
    }

    #[test]
    fn a_past_instant_is_an_absolute_time_before_now() {
        assert_eq!(past_instant("2026-01-01T00:00:00Z"), Ok(When(1_767_225_600_000)));
        for not in ["now", "24h", "9999-01-01T00:00:00Z", "yesterday"] {
            assert!(past_instant(not).is_err(), "{not}");
        }
    }
}
