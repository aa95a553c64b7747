//! Positions in a shard: sequence numbers, record positions and checkpoints.
//!
//! Kinesis and DynamoDB Streams sequence numbers are decimal strings of up to 56
//! digits or more: they are compared as numbers (length, then digits), never as
//! strings (`"10" < "9"`) and never as `u64` (they overflow it).

use std::cmp::Ordering;
use std::fmt;

/// A sequence number that is not a non-empty string of ASCII digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid sequence number {0:?}: expected decimal digits")]
pub struct InvalidSequenceNumber(pub String);

/// A shard sequence number, kept as its decimal text and ordered numerically.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SequenceNumber(String);

impl SequenceNumber {
    /// Parses decimal digits; leading zeros are dropped so equal numbers compare equal.
    pub fn parse(text: &str) -> Result<Self, InvalidSequenceNumber> {
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InvalidSequenceNumber(text.to_string()));
        }
        let trimmed = text.trim_start_matches('0');
        Ok(Self(if trimmed.is_empty() {
            "0".to_string()
        } else {
            trimmed.to_string()
        }))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Ord for SequenceNumber {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.len().cmp(&other.0.len()).then_with(|| self.0.cmp(&other.0))
    }
}

impl PartialOrd for SequenceNumber {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Debug for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

impl fmt::Display for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for SequenceNumber {
    type Err = InvalidSequenceNumber;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// The position of one user record: the stream record's sequence number, and its
/// index inside a KPL aggregate (0 for a plain record).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordPosition {
    pub sequence: SequenceNumber,
    pub subsequence: u64,
}

impl fmt::Display for RecordPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.sequence, self.subsequence)
    }
}

/// Where a lease stands in its shard (the `checkpoint` attribute of a KCL lease).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checkpoint {
    /// Nothing processed; start at the oldest record.
    TrimHorizon,
    /// Nothing processed; start at the newest record.
    Latest,
    /// Nothing processed; start at the configured timestamp.
    AtTimestamp,
    /// Every record up to and including this position is processed.
    At(RecordPosition),
    /// The shard is closed and every record of it is processed.
    ShardEnd,
}

/// A checkpoint that would move backwards, or past the end of the shard.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint {to} is before the current checkpoint {current}")]
    Backwards {
        current: RecordPosition,
        to: RecordPosition,
    },
    #[error("the shard is already at SHARD_END")]
    AfterShardEnd,
}

impl Checkpoint {
    pub const TRIM_HORIZON: &'static str = "TRIM_HORIZON";
    pub const LATEST: &'static str = "LATEST";
    pub const AT_TIMESTAMP: &'static str = "AT_TIMESTAMP";
    pub const SHARD_END: &'static str = "SHARD_END";

    /// Reads the KCL attributes `checkpoint` and `checkpointSubSequenceNumber`.
    pub fn from_kcl(checkpoint: &str, subsequence: u64) -> Result<Self, InvalidSequenceNumber> {
        Ok(match checkpoint {
            Self::TRIM_HORIZON => Checkpoint::TrimHorizon,
            Self::LATEST => Checkpoint::Latest,
            Self::AT_TIMESTAMP => Checkpoint::AtTimestamp,
            Self::SHARD_END => Checkpoint::ShardEnd,
            sequence => Checkpoint::At(RecordPosition {
                sequence: SequenceNumber::parse(sequence)?,
                subsequence,
            }),
        })
    }

    /// The KCL attributes `checkpoint` and `checkpointSubSequenceNumber`.
    pub fn to_kcl(&self) -> (String, u64) {
        match self {
            Checkpoint::TrimHorizon => (Self::TRIM_HORIZON.into(), 0),
            Checkpoint::Latest => (Self::LATEST.into(), 0),
            Checkpoint::AtTimestamp => (Self::AT_TIMESTAMP.into(), 0),
            Checkpoint::ShardEnd => (Self::SHARD_END.into(), 0),
            Checkpoint::At(position) => (position.sequence.to_string(), position.subsequence),
        }
    }

    /// The checkpoint after processing up to `to`; never moves backwards.
    pub fn advanced_to(&self, to: RecordPosition) -> Result<Checkpoint, CheckpointError> {
        match self {
            Checkpoint::ShardEnd => Err(CheckpointError::AfterShardEnd),
            Checkpoint::At(current) if to < *current => Err(CheckpointError::Backwards {
                current: current.clone(),
                to,
            }),
            _ => Ok(Checkpoint::At(to)),
        }
    }

    /// Whether a record at `position` was already processed under this checkpoint.
    pub fn covers(&self, position: &RecordPosition) -> bool {
        match self {
            Checkpoint::At(current) => position <= current,
            Checkpoint::ShardEnd => true,
            _ => false,
        }
    }

    pub fn is_shard_end(&self) -> bool {
        matches!(self, Checkpoint::ShardEnd)
    }
}

impl fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Checkpoint::At(position) => write!(f, "{position}"),
            other => f.write_str(&other.to_kcl().0),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn seq(s: &str) -> SequenceNumber {
        SequenceNumber::parse(s).expect("digits")
    }

    #[test]
    fn sequence_numbers_compare_as_numbers() {
        assert!(seq("9") < seq("10"));
        assert!(
            seq("49590338271490256608559692538361571095921575989136588898")
                > seq("4959033827149025660855969253836157109592157598913658889")
        );
        assert!(seq("18446744073709551616") > seq("18446744073709551615"), "beyond u64");
        assert_eq!(seq("007"), seq("7"));
        assert_eq!(seq("0000"), seq("0"));
    }

    #[test]
    fn non_digits_are_refused() {
        for bad in ["", "12a", "-1", " 1", "1.0", "TRIM_HORIZON"] {
            assert!(SequenceNumber::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn positions_order_by_sequence_then_subsequence() {
        let a = RecordPosition {
            sequence: seq("100"),
            subsequence: 5,
        };
        let b = RecordPosition {
            sequence: seq("100"),
            subsequence: 6,
        };
        let c = RecordPosition {
            sequence: seq("101"),
            subsequence: 0,
        };
        assert!(a < b && b < c);
    }

    #[test]
    fn checkpoints_only_move_forward() {
        let at = |s: &str, sub| RecordPosition {
            sequence: seq(s),
            subsequence: sub,
        };
        let start = Checkpoint::TrimHorizon;
        let first = start.advanced_to(at("20", 0)).expect("from the horizon");
        let second = first.advanced_to(at("20", 3)).expect("forward in an aggregate");
        assert!(matches!(
            second.advanced_to(at("19", 9)),
            Err(CheckpointError::Backwards { .. })
        ));
        assert_eq!(
            second.advanced_to(at("20", 3)),
            Ok(second.clone()),
            "same position is fine"
        );
        assert_eq!(
            Checkpoint::ShardEnd.advanced_to(at("1", 0)),
            Err(CheckpointError::AfterShardEnd)
        );
    }

    #[test]
    fn resuming_skips_exactly_what_is_covered() {
        let checkpoint = Checkpoint::At(RecordPosition {
            sequence: seq("50"),
            subsequence: 2,
        });
        assert!(checkpoint.covers(&RecordPosition {
            sequence: seq("50"),
            subsequence: 2
        }));
        assert!(!checkpoint.covers(&RecordPosition {
            sequence: seq("50"),
            subsequence: 3
        }));
        assert!(checkpoint.covers(&RecordPosition {
            sequence: seq("49"),
            subsequence: 9
        }));
        assert!(!Checkpoint::TrimHorizon.covers(&RecordPosition {
            sequence: seq("1"),
            subsequence: 0
        }));
    }

    #[test]
    fn kcl_attributes_round_trip() {
        for checkpoint in [
            Checkpoint::TrimHorizon,
            Checkpoint::Latest,
            Checkpoint::AtTimestamp,
            Checkpoint::ShardEnd,
            Checkpoint::At(RecordPosition {
                sequence: seq("4959033827149025660855969253836157109592157598913658889"),
                subsequence: 7,
            }),
        ] {
            let (text, sub) = checkpoint.to_kcl();
            assert_eq!(Checkpoint::from_kcl(&text, sub), Ok(checkpoint));
        }
    }

    proptest! {
        #[test]
        fn ordering_matches_big_integer_ordering(a in "[0-9]{1,60}", b in "[0-9]{1,60}") {
            let (x, y) = (seq(&a), seq(&b));
            let strip = |s: &str| { let t = s.trim_start_matches('0'); if t.is_empty() { "0".to_string() } else { t.to_string() } };
            let (sa, sb) = (strip(&a), strip(&b));
            let expected = sa.len().cmp(&sb.len()).then(sa.cmp(&sb));
            prop_assert_eq!(x.cmp(&y), expected);
        }
    }
}
