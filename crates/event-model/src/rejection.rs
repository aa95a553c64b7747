//! Why a record is not a valid event: a machine-readable reason and the field.

use std::fmt;

/// The reason a record was rejected; `as_str` is what metrics and `errors/` carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// No bytes, or only whitespace.
    Empty,
    /// Larger than the configured maximum event size.
    TooLarge,
    InvalidUtf8,
    /// Not JSON (includes NaN, 1e999 and trailing garbage).
    MalformedJson,
    /// JSON, but not an object.
    NotAnObject,
    /// A field appears twice (JSON parsers disagree on which copy wins).
    DuplicateField,
    MissingField,
    /// A string where a number belongs, an object where a string belongs, ...
    WrongType,
    /// Not a hyphenated UUID (`8-4-4-4-12` hex digits).
    InvalidUuid,
    /// `app_name` outside `[A-Za-z0-9._-]`.
    InvalidCharacters,
    /// A control character (U+0000–U+001F, U+007F–U+009F) in a text field.
    ControlCharacters,
    /// A required text field that is empty (after trimming).
    EmptyValue,
    /// Longer than the field's limit in UTF-8 bytes (Redshift VARCHAR lengths are bytes).
    TooLong,
    NegativeTimestamp,
    /// A timestamp with a fraction of a millisecond.
    FractionalTimestamp,
    /// Later than the record's arrival plus the allowed clock skew.
    FutureTimestamp,
    /// A Snowplow enriched event without its 131 tab-separated fields.
    SnowplowFieldCount,
    /// A Snowplow enriched event with a field its type cannot hold.
    SnowplowBadField,
    /// A record the store it belongs in refused for good (DynamoDB's ValidationException).
    Unwritable,
    /// `event_data` that is not a JSON object (nor null).
    EventDataNotAnObject,
    /// `event_data` longer than the configured bound.
    EventDataTooLarge,
    /// `event_data` nested deeper than the configured bound.
    EventDataTooDeep,
    /// A key in `event_data` with a control character.
    EventDataInvalidKey,
    /// A number in `event_data` no 64-bit float holds (1e999).
    EventDataInvalidNumber,
    /// A key twice in one object of `event_data` (readers disagree on which wins).
    EventDataDuplicateKey,
    /// An event that does not match its type's JSON Schema (`EVENT_SCHEMAS`).
    SchemaViolation,
    /// An event type without a schema, when `SCHEMA_MODE` is `strict`.
    NoSchema,
}

impl Reason {
    pub const ALL: [Reason; 27] = [
        Reason::Empty,
        Reason::TooLarge,
        Reason::InvalidUtf8,
        Reason::MalformedJson,
        Reason::NotAnObject,
        Reason::DuplicateField,
        Reason::MissingField,
        Reason::WrongType,
        Reason::InvalidUuid,
        Reason::InvalidCharacters,
        Reason::ControlCharacters,
        Reason::EmptyValue,
        Reason::TooLong,
        Reason::NegativeTimestamp,
        Reason::FractionalTimestamp,
        Reason::FutureTimestamp,
        Reason::SnowplowFieldCount,
        Reason::SnowplowBadField,
        Reason::Unwritable,
        Reason::EventDataNotAnObject,
        Reason::EventDataTooLarge,
        Reason::EventDataTooDeep,
        Reason::EventDataInvalidKey,
        Reason::EventDataInvalidNumber,
        Reason::EventDataDuplicateKey,
        Reason::SchemaViolation,
        Reason::NoSchema,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Empty => "empty",
            Reason::TooLarge => "too_large",
            Reason::InvalidUtf8 => "invalid_utf8",
            Reason::MalformedJson => "malformed_json",
            Reason::NotAnObject => "not_an_object",
            Reason::DuplicateField => "duplicate_field",
            Reason::MissingField => "missing_field",
            Reason::WrongType => "wrong_type",
            Reason::InvalidUuid => "invalid_uuid",
            Reason::InvalidCharacters => "invalid_characters",
            Reason::ControlCharacters => "control_characters",
            Reason::EmptyValue => "empty_value",
            Reason::TooLong => "too_long",
            Reason::NegativeTimestamp => "negative_timestamp",
            Reason::FractionalTimestamp => "fractional_timestamp",
            Reason::FutureTimestamp => "future_timestamp",
            Reason::SnowplowFieldCount => "snowplow_field_count",
            Reason::SnowplowBadField => "snowplow_bad_field",
            Reason::Unwritable => "unwritable",
            Reason::EventDataNotAnObject => "event_data_not_an_object",
            Reason::EventDataTooLarge => "event_data_too_large",
            Reason::EventDataTooDeep => "event_data_too_deep",
            Reason::EventDataInvalidKey => "event_data_invalid_key",
            Reason::EventDataInvalidNumber => "event_data_invalid_number",
            Reason::EventDataDuplicateKey => "event_data_duplicate_key",
            Reason::SchemaViolation => "schema_violation",
            Reason::NoSchema => "no_schema",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejected record: why, which field (when one is to blame), and a human-readable detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: Reason,
    pub field: Option<String>,
    pub detail: String,
}

impl Rejection {
    pub fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            field: None,
            detail: detail.into(),
        }
    }

    pub fn field(reason: Reason, field: &str, detail: impl Into<String>) -> Self {
        Self {
            reason,
            field: Some(field.to_string()),
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{} ({field}): {}", self.reason, self.detail),
            None => write!(f, "{}: {}", self.reason, self.detail),
        }
    }
}

impl std::error::Error for Rejection {}
