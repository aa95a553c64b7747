//! The changes validation makes to an event it accepts. Each is safe (the meaning of
//! the event does not change) and each is counted in a metric by the connector.

/// One kind of normalization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Normalization {
    /// `event_id` or `client_id` had upper-case hex digits; UUIDs are stored lower case
    /// so that deduplication and joins compare them as equal.
    UuidLowercased,
    /// A text field had leading or trailing whitespace, which was removed.
    WhitespaceTrimmed,
    /// An optional field was `null` or an empty string, and is left out.
    EmptyOptionalDropped,
    /// `event_timestamp` was written as a float with no fraction (`1.7e12`) and is
    /// stored as the integer it equals.
    IntegralFloatTimestamp,
    /// The client sent `server_timestamp`, which only the connector may set; it is
    /// removed and replaced by the arrival time.
    ClientServerTimestampDropped,
}

impl Normalization {
    pub const ALL: [Normalization; 5] = [
        Normalization::UuidLowercased,
        Normalization::WhitespaceTrimmed,
        Normalization::EmptyOptionalDropped,
        Normalization::IntegralFloatTimestamp,
        Normalization::ClientServerTimestampDropped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Normalization::UuidLowercased => "uuid_lowercased",
            Normalization::WhitespaceTrimmed => "whitespace_trimmed",
            Normalization::EmptyOptionalDropped => "empty_optional_dropped",
            Normalization::IntegralFloatTimestamp => "integral_float_timestamp",
            Normalization::ClientServerTimestampDropped => "client_server_timestamp_dropped",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// The set of normalizations applied to one event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Normalizations(u8);

impl Normalizations {
    pub fn insert(&mut self, normalization: Normalization) {
        self.0 |= normalization.bit();
    }

    pub fn contains(self, normalization: Normalization) -> bool {
        self.0 & normalization.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Normalization> {
        Normalization::ALL.into_iter().filter(move |n| self.contains(*n))
    }
}
