//! The telemetry event: parsed from a record's bytes, validated field by field,
//! normalized where that is safe, and written back as one JSON line.
//!
//! Rules (lengths are UTF-8 bytes, as Redshift VARCHAR lengths are):
//!
//! | field | rule |
//! |---|---|
//! | `event_id`, `client_id` | required string, hyphenated UUID, stored lower case |
//! | `app_name` | required string, `[A-Za-z0-9._-]`, 1–64 |
//! | `event_version` | required string, 1–64, no control characters |
//! | `event_type` | required string, 1–256, no control characters |
//! | `event_timestamp` | required integer, ms since the epoch, ≥ 0, ≤ arrival + skew |
//! | `app_version`, `level_id` | optional string, ≤ 64, no control characters |
//! | `position_x`, `position_y` | optional finite number |
//! | `event_data` | optional object, checked by [`crate::event_data`], kept verbatim |
//!
//! Text fields are trimmed of surrounding spaces (Unicode white space that is not a
//! control character) before they are checked. A field
//! given twice is a rejection. `server_timestamp` belongs to the connector: a client's
//! copy is dropped. **Unknown fields** are kept verbatim: the lake keeps what the game
//! sent (a newer client's fields survive until the schema catches up) and the warehouse
//! loads only its known columns.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::normalization::{Normalization, Normalizations};
use crate::rejection::{Reason, Rejection};
use crate::schema::EventSchemas;

pub const MAX_APP_NAME_BYTES: usize = 64;
pub const MAX_EVENT_VERSION_BYTES: usize = 64;
pub const MAX_EVENT_TYPE_BYTES: usize = 256;
pub const MAX_APP_VERSION_BYTES: usize = 64;
pub const MAX_LEVEL_ID_BYTES: usize = 64;
/// A player id that is not a telemetry UUID (a Snowplow `user_id`: whatever the game's
/// login system uses); Snowplow's own `user_id` column is 255 bytes.
pub const MAX_PLAYER_ID_BYTES: usize = 255;

/// Limits that depend on the deployment.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Larger records are rejected before parsing.
    pub max_event_bytes: usize,
    /// How far past its arrival an event's timestamp may be (client clock skew).
    pub future_window_ms: i64,
    /// The most JSON text `event_data` may hold.
    pub max_event_data_bytes: usize,
    /// The deepest `event_data` may nest (the object itself is level 1).
    pub max_event_data_depth: usize,
    /// The game's JSON Schemas and how they apply; shared by every shard's batch.
    pub schemas: Arc<EventSchemas>,
}

impl Default for Rules {
    /// 32 KiB per event (the known fields need under 1 KiB), one hour of clock skew,
    /// `event_data` of at most 16 KiB and 16 levels.
    fn default() -> Self {
        Self {
            max_event_bytes: 32 * 1024,
            future_window_ms: 3_600_000,
            max_event_data_bytes: crate::event_data::DEFAULT_MAX_BYTES,
            max_event_data_depth: crate::event_data::DEFAULT_MAX_DEPTH,
            schemas: Arc::default(),
        }
    }
}

/// A valid event, borrowing from the record where it can.
#[derive(Debug, Clone)]
pub struct Event<'a> {
    pub event_id: Cow<'a, str>,
    pub client_id: Cow<'a, str>,
    pub app_name: Cow<'a, str>,
    pub event_version: Cow<'a, str>,
    pub event_type: Cow<'a, str>,
    pub event_timestamp: i64,
    pub app_version: Option<Cow<'a, str>>,
    pub level_id: Option<Cow<'a, str>>,
    pub position_x: Option<f64>,
    pub position_y: Option<f64>,
    /// Fields outside the schema, verbatim, in the order they came.
    pub unknown: Vec<(Cow<'a, str>, &'a RawValue)>,
    pub normalizations: Normalizations,
    /// The record's object text, when it can be copied as it is (nothing normalized, one line).
    verbatim: Option<&'a [u8]>,
}

/// The schema's fields, in the order they are written.
const FIELDS: [&str; 10] = [
    "event_id",
    "client_id",
    "app_name",
    "event_version",
    "event_type",
    "event_timestamp",
    "app_version",
    "level_id",
    "position_x",
    "position_y",
];
const SERVER_TIMESTAMP: &str = "server_timestamp";

impl<'a> Event<'a> {
    /// Whether the game sent top-level fields outside the event's schema (`event_data`
    /// is in it): the lake keeps them, the warehouse has no column for them.
    pub fn has_unknown_fields(&self) -> bool {
        self.unknown.iter().any(|(key, _)| key != crate::event_data::FIELD)
    }

    /// Parses and validates one record that arrived at `arrival_ms`.
    pub fn parse(raw: &'a [u8], arrival_ms: i64, rules: &Rules) -> Result<Event<'a>, Rejection> {
        let start = raw.iter().position(|b| !b.is_ascii_whitespace());
        let Some(start) = start else {
            return Err(Rejection::new(Reason::Empty, "no content"));
        };
        if raw.len() > rules.max_event_bytes {
            return Err(Rejection::new(
                Reason::TooLarge,
                format!("{} bytes, more than {}", raw.len(), rules.max_event_bytes),
            ));
        }
        // Checked once here, so the parser (reading a str) does not check each string again.
        let text = std::str::from_utf8(raw).map_err(|error| {
            Rejection::new(
                Reason::InvalidUtf8,
                format!("invalid UTF-8 at byte {}", error.valid_up_to()),
            )
        })?;
        if raw[start] != b'{' {
            return Err(Rejection::new(Reason::NotAnObject, "a JSON object is expected"));
        }
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let fields = deserializer
            .deserialize_map(FieldsVisitor)
            .and_then(|fields| deserializer.end().map(|()| fields))
            .map_err(|e| Rejection::new(Reason::MalformedJson, e.to_string()))?;
        if let Some(rejection) = fields.problem {
            return Err(rejection);
        }
        let end = raw
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .map_or(raw.len(), |i| i + 1);
        let one_line = memchr::memchr2(b'\n', b'\r', &raw[start..end]).is_none();
        let event = fields.validate(arrival_ms, rules, one_line.then(|| &raw[start..end]))?;
        rules
            .schemas
            .check(&event.app_name, &event.event_type, &event.event_version, || {
                event.to_json_value()
            })?;
        Ok(event)
    }

    /// The event as a JSON value, as the lake line holds it (without `server_timestamp`),
    /// for a schema to check. Built from the validated fields, so only the fields outside
    /// them (`event_data` among them) are parsed again.
    pub fn to_json_value(&self) -> Result<serde_json::Value, serde_json::Error> {
        use serde_json::Value;
        let text = |value: &str| Value::String(value.to_string());
        let mut object = serde_json::Map::new();
        object.insert(FIELDS[0].into(), text(&self.event_id));
        object.insert(FIELDS[1].into(), text(&self.client_id));
        object.insert(FIELDS[2].into(), text(&self.app_name));
        object.insert(FIELDS[3].into(), text(&self.event_version));
        object.insert(FIELDS[4].into(), text(&self.event_type));
        object.insert(FIELDS[5].into(), self.event_timestamp.into());
        if let Some(v) = &self.app_version {
            object.insert(FIELDS[6].into(), text(v));
        }
        if let Some(v) = &self.level_id {
            object.insert(FIELDS[7].into(), text(v));
        }
        if let Some(v) = self.position_x {
            object.insert(FIELDS[8].into(), whole_or_float(v));
        }
        if let Some(v) = self.position_y {
            object.insert(FIELDS[9].into(), whole_or_float(v));
        }
        for (key, value) in &self.unknown {
            object.insert(key.to_string(), serde_json::from_str(value.get())?);
        }
        Ok(Value::Object(object))
    }

    /// Appends the event as one JSON line (with `\n`), `server_timestamp` first when given.
    pub fn write_json_line(&self, server_timestamp: Option<i64>, out: &mut Vec<u8>) {
        out.push(b'{');
        if let Some(ts) = server_timestamp {
            out.extend_from_slice(b"\"server_timestamp\":");
            out.extend_from_slice(itoa::Buffer::new().format(ts).as_bytes());
            out.push(b',');
        }
        match self.verbatim {
            // Everything after the opening brace, as sent.
            Some(object) => out.extend_from_slice(&object[1..]),
            None => self.write_fields(out),
        }
        out.push(b'\n');
    }

    fn write_fields(&self, out: &mut Vec<u8>) {
        let mut writer = FieldWriter { out, first: true };
        writer.string(FIELDS[0], &self.event_id);
        writer.string(FIELDS[1], &self.client_id);
        writer.string(FIELDS[2], &self.app_name);
        writer.string(FIELDS[3], &self.event_version);
        writer.string(FIELDS[4], &self.event_type);
        writer.raw(FIELDS[5], itoa::Buffer::new().format(self.event_timestamp).as_bytes());
        if let Some(v) = &self.app_version {
            writer.string(FIELDS[6], v);
        }
        if let Some(v) = &self.level_id {
            writer.string(FIELDS[7], v);
        }
        if let Some(v) = self.position_x {
            writer.number(FIELDS[8], v);
        }
        if let Some(v) = self.position_y {
            writer.number(FIELDS[9], v);
        }
        for (key, value) in &self.unknown {
            writer.raw(key, value.get().as_bytes());
        }
        writer.out.push(b'}');
    }
}

/// A position as JSON: a whole number as an integer, as the game most likely wrote it
/// (a draft-04 schema's `"type": "integer"` refuses `5.0`).
fn whole_or_float(value: f64) -> serde_json::Value {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53: every integer below is an exact f64
    if value.fract() == 0.0 && value.abs() < EXACT {
        return serde_json::Value::from(value as i64); // whole and below 2^53: exact
    }
    serde_json::Value::from(value)
}

struct FieldWriter<'w> {
    out: &'w mut Vec<u8>,
    first: bool,
}

impl FieldWriter<'_> {
    fn key(&mut self, name: &str) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        write_json_string(self.out, name);
        self.out.push(b':');
    }
    fn string(&mut self, name: &str, value: &str) {
        self.key(name);
        write_json_string(self.out, value);
    }
    fn number(&mut self, name: &str, value: f64) {
        self.key(name);
        serde_json::to_writer(&mut *self.out, &value).expect("a finite f64 always serializes into a Vec");
    }
    fn raw(&mut self, name: &str, value: &[u8]) {
        self.key(name);
        self.out.extend_from_slice(value);
    }
}

fn write_json_string(out: &mut Vec<u8>, value: &str) {
    serde_json::to_writer(out, value).expect("a str always serializes into a Vec");
}

/// A JSON value as far as validation cares.
#[derive(Debug)]
enum Scalar<'a> {
    Str(Cow<'a, str>),
    Unsigned(u64),
    Negative(i64),
    Float(f64),
    Bool,
    Null,
    Nested,
}

impl Scalar<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Scalar::Str(_) => "a string",
            Scalar::Unsigned(_) | Scalar::Negative(_) | Scalar::Float(_) => "a number",
            Scalar::Bool => "a boolean",
            Scalar::Null => "null",
            Scalar::Nested => "an object or array",
        }
    }
}

impl<'de> de::Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v.to_string())))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Scalar::Unsigned(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(if v >= 0 {
            Scalar::Unsigned(v.unsigned_abs())
        } else {
            Scalar::Negative(v)
        })
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Scalar::Float(v))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Scalar::Bool)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Nested)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Nested)
    }
}

/// An object key, borrowed unless it had escapes.
pub(crate) struct Key<'a>(pub(crate) Cow<'a, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Key(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Key(Cow::Owned(v.to_string())))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Key(Cow::Owned(v)))
    }
}

/// The position of a schema field in [`FIELDS`] (a `match` compiles to a length switch).
fn field_index(key: &str) -> Option<usize> {
    Some(match key {
        "event_id" => 0,
        "client_id" => 1,
        "app_name" => 2,
        "event_version" => 3,
        "event_type" => 4,
        "event_timestamp" => 5,
        "app_version" => 6,
        "level_id" => 7,
        "position_x" => 8,
        "position_y" => 9,
        _ => return None,
    })
}

/// The object's fields before validation.
#[derive(Default)]
struct Fields<'a> {
    known: [Option<Scalar<'a>>; FIELDS.len()],
    unknown: Vec<(Cow<'a, str>, &'a RawValue)>,
    client_server_timestamp: bool,
    /// The first structural problem (a duplicate field), reported after the parse.
    problem: Option<Rejection>,
}

struct FieldsVisitor;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = Fields<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = Fields::default();
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            let duplicate = if let Some(index) = field_index(&key) {
                let seen = fields.known[index].is_some();
                if !seen {
                    fields.known[index] = Some(map.next_value::<Scalar<'de>>()?);
                }
                seen
            } else if key == SERVER_TIMESTAMP {
                map.next_value::<IgnoredAny>()?;
                std::mem::replace(&mut fields.client_server_timestamp, true)
            } else {
                let value: &'de RawValue = map.next_value()?;
                let seen = fields.unknown.iter().any(|(k, _)| *k == key);
                if !seen {
                    fields.unknown.push((key.clone(), value));
                }
                seen
            };
            if duplicate {
                if field_index(&key).is_some() {
                    map.next_value::<IgnoredAny>()?;
                }
                fields
                    .problem
                    .get_or_insert_with(|| Rejection::field(Reason::DuplicateField, &key, "the field appears twice"));
            }
        }
        Ok(fields)
    }
}

impl<'a> Fields<'a> {
    fn validate(self, arrival_ms: i64, rules: &Rules, object: Option<&'a [u8]>) -> Result<Event<'a>, Rejection> {
        let mut normalizations = Normalizations::default();
        if self.client_server_timestamp {
            normalizations.insert(Normalization::ClientServerTimestampDropped);
        }
        let [
            event_id,
            client_id,
            app_name,
            event_version,
            event_type,
            event_timestamp,
            app_version,
            level_id,
            position_x,
            position_y,
        ] = self.known;
        if let Some((_, raw)) = self.unknown.iter().find(|(key, _)| key == crate::event_data::FIELD) {
            crate::event_data::check(raw, rules.max_event_data_bytes, rules.max_event_data_depth)?;
        }
        let n = &mut normalizations;
        let event = Event {
            event_id: uuid(FIELDS[0], required(FIELDS[0], event_id)?, n)?,
            client_id: uuid(FIELDS[1], required(FIELDS[1], client_id)?, n)?,
            app_name: app_name_text(required(FIELDS[2], app_name)?, n)?,
            event_version: required_text(FIELDS[3], event_version, MAX_EVENT_VERSION_BYTES, n)?,
            event_type: required_text(FIELDS[4], event_type, MAX_EVENT_TYPE_BYTES, n)?,
            event_timestamp: timestamp(required(FIELDS[5], event_timestamp)?, arrival_ms, rules, n)?,
            app_version: optional_text(FIELDS[6], app_version, MAX_APP_VERSION_BYTES, n)?,
            level_id: optional_text(FIELDS[7], level_id, MAX_LEVEL_ID_BYTES, n)?,
            position_x: position(FIELDS[8], position_x, n)?,
            position_y: position(FIELDS[9], position_y, n)?,
            unknown: self.unknown,
            normalizations,
            verbatim: None,
        };
        let verbatim = object.filter(|_| event.normalizations.is_empty());
        Ok(Event { verbatim, ..event })
    }
}

fn required<'a>(field: &str, value: Option<Scalar<'a>>) -> Result<Scalar<'a>, Rejection> {
    match value {
        None | Some(Scalar::Null) => Err(Rejection::field(Reason::MissingField, field, "required")),
        Some(value) => Ok(value),
    }
}

fn string<'a>(field: &str, value: Scalar<'a>) -> Result<Cow<'a, str>, Rejection> {
    match value {
        Scalar::Str(text) => Ok(text),
        other => Err(Rejection::field(
            Reason::WrongType,
            field,
            format!("a string is expected, not {}", other.kind()),
        )),
    }
}

/// Removes surrounding whitespace, noting it when there was any.
fn trim<'a>(text: Cow<'a, str>, n: &mut Normalizations) -> Cow<'a, str> {
    let edge_is_plain = |b: u8| b > b' ' && b < 0x80;
    match text.as_bytes() {
        [first, .., last] if edge_is_plain(*first) && edge_is_plain(*last) => return text,
        [only] if edge_is_plain(*only) => return text,
        _ => {}
    }
    // Control characters (tab, newline, NEL) are whitespace too, but they are rejected, never stripped.
    let space = |c: char| c.is_whitespace() && !c.is_control();
    let trimmed = text.trim_matches(space);
    if trimmed.len() == text.len() {
        return text;
    }
    n.insert(Normalization::WhitespaceTrimmed);
    match text {
        Cow::Borrowed(b) => Cow::Borrowed(b.trim_matches(space)),
        Cow::Owned(o) => Cow::Owned(o.trim_matches(space).to_string()),
    }
}

/// A player id from an input path without UUIDs (Snowplow's `user_id`), under the rules
/// of telemetry's text fields: trimmed of surrounding spaces, not empty, at most
/// [`MAX_PLAYER_ID_BYTES`], no control characters. The same reasons as telemetry's.
pub fn player_id<'a>(field: &str, text: &'a str) -> Result<&'a str, Rejection> {
    required_identity(field, text, MAX_PLAYER_ID_BYTES)
}

/// A level id from any input path, under `level_id`'s rules, present and not empty (an
/// empty level cannot key LevelState): at most [`MAX_LEVEL_ID_BYTES`], no control
/// characters (so a control character can separate two level ids in a key).
pub fn level_id<'a>(field: &str, text: &'a str) -> Result<&'a str, Rejection> {
    required_identity(field, text, MAX_LEVEL_ID_BYTES)
}

fn required_identity<'a>(field: &str, text: &'a str, max_bytes: usize) -> Result<&'a str, Rejection> {
    let trimmed = match trim(Cow::Borrowed(text), &mut Normalizations::default()) {
        Cow::Borrowed(trimmed) => trimmed,
        // Trimming a borrowed text only ever narrows it.
        Cow::Owned(_) => text,
    };
    if trimmed.is_empty() {
        return Err(Rejection::field(Reason::EmptyValue, field, "empty"));
    }
    check_text(field, trimmed, max_bytes)?;
    Ok(trimmed)
}

fn check_text(field: &str, text: &str, max_bytes: usize) -> Result<(), Rejection> {
    // C0 and DEL are single bytes; every C1 control is encoded as 0xC2 0x80..=0x9F.
    let may_have_control = text.bytes().any(|b| b < 0x20 || b == 0x7f || b == 0xc2);
    if let Some(c) = text.chars().find(|c| may_have_control && c.is_control()) {
        return Err(Rejection::field(
            Reason::ControlCharacters,
            field,
            format!("control character U+{:04X}", c as u32),
        ));
    }
    if text.len() > max_bytes {
        return Err(Rejection::field(
            Reason::TooLong,
            field,
            format!("{} bytes, at most {max_bytes}", text.len()),
        ));
    }
    Ok(())
}

fn required_text<'a>(
    field: &str,
    value: Option<Scalar<'a>>,
    max_bytes: usize,
    n: &mut Normalizations,
) -> Result<Cow<'a, str>, Rejection> {
    let text = trim(string(field, required(field, value)?)?, n);
    if text.is_empty() {
        return Err(Rejection::field(Reason::EmptyValue, field, "empty"));
    }
    check_text(field, &text, max_bytes)?;
    Ok(text)
}

fn optional_text<'a>(
    field: &str,
    value: Option<Scalar<'a>>,
    max_bytes: usize,
    n: &mut Normalizations,
) -> Result<Option<Cow<'a, str>>, Rejection> {
    let text = match value {
        None => return Ok(None),
        Some(Scalar::Null) => {
            n.insert(Normalization::EmptyOptionalDropped);
            return Ok(None);
        }
        Some(value) => trim(string(field, value)?, n),
    };
    if text.is_empty() {
        n.insert(Normalization::EmptyOptionalDropped);
        return Ok(None);
    }
    check_text(field, &text, max_bytes)?;
    Ok(Some(text))
}

fn app_name_text<'a>(value: Scalar<'a>, n: &mut Normalizations) -> Result<Cow<'a, str>, Rejection> {
    let field = FIELDS[2];
    let text = trim(string(field, value)?, n);
    if text.is_empty() {
        return Err(Rejection::field(Reason::EmptyValue, field, "empty"));
    }
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
    if !text.bytes().all(allowed)
        && let Some(c) = text.chars().find(|c| !(c.is_ascii() && allowed(*c as u8)))
    {
        return Err(Rejection::field(
            Reason::InvalidCharacters,
            field,
            format!("{c:?} is outside [A-Za-z0-9._-]"),
        ));
    }
    check_text(field, &text, MAX_APP_NAME_BYTES)?;
    Ok(text)
}

fn uuid<'a>(field: &str, value: Scalar<'a>, n: &mut Normalizations) -> Result<Cow<'a, str>, Rejection> {
    let text = trim(string(field, value)?, n);
    let hyphenated = text.len() == 36 && uuid::Uuid::try_parse(&text).is_ok();
    if !hyphenated {
        let shown: String = text.chars().take(40).collect();
        return Err(Rejection::field(
            Reason::InvalidUuid,
            field,
            format!("{shown:?} is not a hyphenated UUID"),
        ));
    }
    if text.bytes().any(|b| b.is_ascii_uppercase()) {
        n.insert(Normalization::UuidLowercased);
        return Ok(Cow::Owned(text.to_ascii_lowercase()));
    }
    Ok(text)
}

fn timestamp(value: Scalar<'_>, arrival_ms: i64, rules: &Rules, n: &mut Normalizations) -> Result<i64, Rejection> {
    let field = FIELDS[5];
    // 2^63 as f64: every integral float below it converts exactly to i64.
    const I64_LIMIT: f64 = 9_223_372_036_854_775_808.0;
    let ms = match value {
        Scalar::Unsigned(ms) => i64::try_from(ms).unwrap_or(i64::MAX),
        Scalar::Negative(ms) => {
            return Err(Rejection::field(Reason::NegativeTimestamp, field, format!("{ms}")));
        }
        Scalar::Float(ms) if ms < 0.0 => {
            return Err(Rejection::field(Reason::NegativeTimestamp, field, format!("{ms}")));
        }
        Scalar::Float(ms) if ms.fract() != 0.0 => {
            return Err(Rejection::field(
                Reason::FractionalTimestamp,
                field,
                format!("{ms} is not a whole number of milliseconds"),
            ));
        }
        Scalar::Float(ms) => {
            n.insert(Normalization::IntegralFloatTimestamp);
            if ms >= I64_LIMIT { i64::MAX } else { ms as i64 }
        }
        other => {
            return Err(Rejection::field(
                Reason::WrongType,
                field,
                format!("an integer of milliseconds is expected, not {}", other.kind()),
            ));
        }
    };
    let latest = arrival_ms.saturating_add(rules.future_window_ms);
    if ms > latest {
        return Err(Rejection::field(
            Reason::FutureTimestamp,
            field,
            format!(
                "{ms} is after the arrival time {arrival_ms} plus {} ms",
                rules.future_window_ms
            ),
        ));
    }
    Ok(ms)
}

fn position(field: &str, value: Option<Scalar<'_>>, n: &mut Normalizations) -> Result<Option<f64>, Rejection> {
    match value {
        None => Ok(None),
        Some(Scalar::Null) => {
            n.insert(Normalization::EmptyOptionalDropped);
            Ok(None)
        }
        Some(Scalar::Unsigned(v)) => Ok(Some(v as f64)),
        Some(Scalar::Negative(v)) => Ok(Some(v as f64)),
        // serde_json refuses non-finite numbers at parse time; kept as a guard.
        Some(Scalar::Float(v)) if v.is_finite() => Ok(Some(v)),
        Some(Scalar::Float(v)) => Err(Rejection::field(Reason::WrongType, field, format!("{v} is not finite"))),
        Some(other) => Err(Rejection::field(
            Reason::WrongType,
            field,
            format!("a number is expected, not {}", other.kind()),
        )),
    }
}
