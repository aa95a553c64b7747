//! Every validation rule against hostile input, and the normalization properties.

use event_model::{Event, Normalization, Reason, Rules};
use proptest::prelude::*;

const ARRIVAL: i64 = 1_767_225_600_000;
const EVENT_ID: &str = "6f1c2a9e-3b4d-4e5f-8a6b-7c8d9e0f1a2b";
const CLIENT_ID: &str = "0a1b2c3d-4e5f-4a6b-9c7d-8e9fa0b1c2d3";

fn valid() -> serde_json::Map<String, serde_json::Value> {
    let serde_json::Value::Object(map) = serde_json::json!({
        "event_id": EVENT_ID,
        "client_id": CLIENT_ID,
        "app_name": "SampleGame",
        "event_version": "1.0",
        "event_type": "player_death",
        "event_timestamp": ARRIVAL - 1_000,
        "app_version": "2.3.1",
        "level_id": "level-03",
        "position_x": 12.5,
        "position_y": -3.25
    }) else {
        unreachable!()
    };
    map
}

fn with(field: &str, value: serde_json::Value) -> Vec<u8> {
    let mut map = valid();
    map.insert(field.to_string(), value);
    serde_json::to_vec(&map).expect("json")
}

fn without(field: &str) -> Vec<u8> {
    let mut map = valid();
    map.remove(field);
    serde_json::to_vec(&map).expect("json")
}

fn parse(raw: &[u8]) -> Result<Event<'_>, event_model::Rejection> {
    Event::parse(raw, ARRIVAL, &Rules::default())
}

#[track_caller]
fn rejected(raw: &[u8], reason: Reason, field: Option<&str>) {
    match parse(raw) {
        Ok(event) => panic!("accepted {:?}: {event:?}", String::from_utf8_lossy(raw)),
        Err(rejection) => {
            assert_eq!(rejection.reason, reason, "{rejection}");
            assert_eq!(rejection.field.as_deref(), field, "{rejection}");
            assert!(!rejection.detail.is_empty());
        }
    }
}

fn line(event: &Event<'_>, server_timestamp: Option<i64>) -> serde_json::Value {
    let mut out = Vec::new();
    event.write_json_line(server_timestamp, &mut out);
    assert_eq!(out.last(), Some(&b'\n'));
    assert_eq!(out.iter().filter(|b| **b == b'\n').count(), 1, "one line");
    serde_json::from_slice(&out).expect("a line is JSON")
}

#[test]
fn a_valid_event_is_copied_with_the_server_timestamp_first() {
    let raw = serde_json::to_vec(&valid()).expect("json");
    let event = parse(&raw).expect("valid");
    assert!(event.normalizations.is_empty());
    let mut out = Vec::new();
    event.write_json_line(Some(ARRIVAL), &mut out);
    assert!(out.starts_with(format!("{{\"server_timestamp\":{ARRIVAL},").as_bytes()));
    let mut expected = valid();
    expected.insert("server_timestamp".into(), ARRIVAL.into());
    assert_eq!(line(&event, Some(ARRIVAL)), serde_json::Value::Object(expected));
}

#[test]
fn framing_errors() {
    rejected(b"", Reason::Empty, None);
    rejected(b" \n\t", Reason::Empty, None);
    rejected(b"[1,2]", Reason::NotAnObject, None);
    rejected(b"\"text\"", Reason::NotAnObject, None);
    rejected(b"{\"event_id\":", Reason::MalformedJson, None);
    rejected(b"{} {}", Reason::MalformedJson, None);
    let mut bad_utf8 = serde_json::to_vec(&valid()).expect("json");
    let at = bad_utf8.iter().position(|b| *b == b'S').expect("SampleGame");
    bad_utf8[at] = 0xff;
    rejected(&bad_utf8, Reason::InvalidUtf8, None);
    // Over-long encodings and lone surrogates are invalid UTF-8 too.
    rejected(b"{\"app_name\":\"\xc0\xaf\"}", Reason::InvalidUtf8, None);
    rejected(b"{\"app_name\":\"\xed\xa0\x80\"}", Reason::InvalidUtf8, None);
}

#[test]
fn non_finite_and_out_of_range_numbers_are_malformed() {
    let raw = String::from_utf8(serde_json::to_vec(&valid()).expect("json")).expect("utf8");
    for bad in ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"] {
        let text = raw.replace("12.5", bad);
        rejected(text.as_bytes(), Reason::MalformedJson, None);
    }
}

#[test]
fn oversized_records_are_rejected_before_parsing() {
    let huge = "x".repeat(1024 * 1024);
    rejected(&with("level_id", huge.clone().into()), Reason::TooLarge, None);
    let rules = Rules {
        max_event_bytes: 2 * 1024 * 1024,
        ..Rules::default()
    };
    let raw = with("level_id", huge.into());
    let rejection = Event::parse(&raw, ARRIVAL, &rules).expect_err("too long for the column");
    assert_eq!(
        (rejection.reason, rejection.field.as_deref()),
        (Reason::TooLong, Some("level_id"))
    );
}

#[test]
fn required_fields() {
    for field in [
        "event_id",
        "client_id",
        "app_name",
        "event_version",
        "event_type",
        "event_timestamp",
    ] {
        rejected(&without(field), Reason::MissingField, Some(field));
        rejected(&with(field, serde_json::Value::Null), Reason::MissingField, Some(field));
    }
    for field in ["app_version", "level_id", "position_x", "position_y"] {
        assert!(parse(&without(field)).is_ok(), "{field} is optional");
    }
}

#[test]
fn wrong_types() {
    for field in [
        "event_id",
        "client_id",
        "app_name",
        "event_version",
        "event_type",
        "level_id",
    ] {
        rejected(&with(field, 5.into()), Reason::WrongType, Some(field));
        rejected(&with(field, true.into()), Reason::WrongType, Some(field));
        rejected(
            &with(field, serde_json::json!({"nested": "object"})),
            Reason::WrongType,
            Some(field),
        );
        rejected(&with(field, serde_json::json!(["a"])), Reason::WrongType, Some(field));
    }
    rejected(
        &with("event_timestamp", "1700000000000".into()),
        Reason::WrongType,
        Some("event_timestamp"),
    );
    rejected(
        &with("position_x", "12.5".into()),
        Reason::WrongType,
        Some("position_x"),
    );
    rejected(
        &with("position_y", serde_json::json!([1, 2])),
        Reason::WrongType,
        Some("position_y"),
    );
}

#[test]
fn uuids_must_be_hyphenated_and_are_stored_lower_case() {
    for bad in [
        "not-a-uuid",
        "6f1c2a9e3b4d4e5f8a6b7c8d9e0f1a2b",
        "{6f1c2a9e-3b4d-4e5f-8a6b-7c8d9e0f1a2b}",
        "6f1c2a9e-3b4d-4e5f-8a6b-7c8d9e0f1a2g",
        "urn:uuid:6f1c2a9e-3b4d-4e5f-8a6b-7c8d9e0f1a2b",
        "",
        "' OR 1=1; --",
    ] {
        rejected(&with("event_id", bad.into()), Reason::InvalidUuid, Some("event_id"));
        rejected(&with("client_id", bad.into()), Reason::InvalidUuid, Some("client_id"));
    }
    let raw = with("event_id", EVENT_ID.to_uppercase().into());
    let event = parse(&raw).expect("upper case is a valid UUID");
    assert_eq!(event.event_id, EVENT_ID);
    assert!(event.normalizations.contains(Normalization::UuidLowercased));
    assert_eq!(line(&event, None)["event_id"], EVENT_ID);
}

#[test]
fn app_name_character_set_and_lengths() {
    for bad in ["Sample Game", "game/1", "jeu-é", "a\"b", "x;DROP TABLE events"] {
        rejected(
            &with("app_name", bad.into()),
            Reason::InvalidCharacters,
            Some("app_name"),
        );
    }
    assert!(parse(&with("app_name", "Game_1.0-beta".into())).is_ok());
    assert!(parse(&with("app_name", "a".repeat(64).into())).is_ok());
    rejected(
        &with("app_name", "a".repeat(65).into()),
        Reason::TooLong,
        Some("app_name"),
    );
    rejected(&with("app_name", "".into()), Reason::EmptyValue, Some("app_name"));
    rejected(
        &with("event_type", "   ".into()),
        Reason::EmptyValue,
        Some("event_type"),
    );
    // Limits are UTF-8 bytes: 32 two-byte characters fill a 64-byte column.
    assert!(parse(&with("level_id", "é".repeat(32).into())).is_ok());
    rejected(
        &with("level_id", "é".repeat(33).into()),
        Reason::TooLong,
        Some("level_id"),
    );
    assert!(parse(&with("event_type", "t".repeat(256).into())).is_ok());
    rejected(
        &with("event_type", "t".repeat(257).into()),
        Reason::TooLong,
        Some("event_type"),
    );
    rejected(
        &with("event_version", "v".repeat(65).into()),
        Reason::TooLong,
        Some("event_version"),
    );
    rejected(
        &with("app_version", "v".repeat(65).into()),
        Reason::TooLong,
        Some("app_version"),
    );
}

#[test]
fn control_characters_are_rejected_never_stripped() {
    for bad in [
        "a\u{0}b",
        "tab\there",
        "line\nbreak",
        "bell\u{7}",
        "del\u{7f}",
        "c1\u{85}",
        "c1\u{9f}",
        "edge\n",
        "\tedge",
    ] {
        rejected(
            &with("event_type", bad.into()),
            Reason::ControlCharacters,
            Some("event_type"),
        );
        rejected(
            &with("level_id", bad.into()),
            Reason::ControlCharacters,
            Some("level_id"),
        );
    }
    // Quotes, backslashes, SQL and non-ASCII letters are text, not control characters.
    for fine in [
        "it's \"quoted\" \\",
        "'; DROP TABLE events; --",
        "niveau-é",
        "레벨",
        "x\u{a0}y",
    ] {
        let raw = with("level_id", fine.into());
        let event = parse(&raw).unwrap_or_else(|r| panic!("{fine:?}: {r}"));
        assert_eq!(line(&event, None)["level_id"], fine);
    }
}

#[test]
fn timestamps() {
    let field = Some("event_timestamp");
    rejected(&with("event_timestamp", (-1).into()), Reason::NegativeTimestamp, field);
    rejected(
        &with("event_timestamp", (-1.0).into()),
        Reason::NegativeTimestamp,
        field,
    );
    rejected(&with("event_timestamp", 1.5.into()), Reason::FractionalTimestamp, field);
    let hour = 3_600_000;
    assert!(parse(&with("event_timestamp", (ARRIVAL + hour).into())).is_ok());
    rejected(
        &with("event_timestamp", (ARRIVAL + hour + 1).into()),
        Reason::FutureTimestamp,
        field,
    );
    rejected(
        &with("event_timestamp", u64::MAX.into()),
        Reason::FutureTimestamp,
        field,
    );
    rejected(&with("event_timestamp", 1e300.into()), Reason::FutureTimestamp, field);
    assert!(parse(&with("event_timestamp", 0.into())).is_ok());
    let rules = Rules {
        future_window_ms: 0,
        ..Rules::default()
    };
    assert!(Event::parse(&with("event_timestamp", (ARRIVAL + 1).into()), ARRIVAL, &rules).is_err());

    let raw = with("event_timestamp", 1.7e12.into());
    let event = parse(&raw).expect("an integral float is a whole number of ms");
    assert_eq!(event.event_timestamp, 1_700_000_000_000);
    assert!(event.normalizations.contains(Normalization::IntegralFloatTimestamp));
    assert_eq!(line(&event, None)["event_timestamp"], 1_700_000_000_000_i64);
}

#[test]
fn duplicate_fields_are_rejected_whichever_copy_a_parser_keeps() {
    let raw = format!(
        "{{\"event_id\":\"{EVENT_ID}\",\"client_id\":\"{CLIENT_ID}\",\"app_name\":\"g\",\"event_version\":\"1\",\"event_type\":\"t\",\"event_timestamp\":1,\"event_type\":\"u\"}}"
    );
    rejected(raw.as_bytes(), Reason::DuplicateField, Some("event_type"));
    let mut map = valid();
    map.insert("extra".into(), 1.into());
    let text = serde_json::to_string(&map).expect("json");
    let twice = text.replacen("\"extra\":1", "\"extra\":1,\"extra\":2", 1);
    rejected(twice.as_bytes(), Reason::DuplicateField, Some("extra"));
}

#[test]
fn unknown_fields_are_kept_verbatim() {
    let mut map = valid();
    map.insert("platform".into(), "android".into());
    map.insert(
        "inventory".into(),
        serde_json::json!({"gold": 3, "items": ["sword", null]}),
    );
    let raw = serde_json::to_vec(&map).expect("json");
    let event = parse(&raw).expect("valid");
    assert_eq!(event.unknown.len(), 2);
    let written = line(&event, Some(ARRIVAL));
    assert_eq!(written["inventory"]["items"][0], "sword");
    // Also through the re-serializing path (a normalization forces it).
    map.insert("level_id".into(), " level-03 ".into());
    let raw = serde_json::to_vec(&map).expect("json");
    let event = parse(&raw).expect("valid");
    assert!(event.normalizations.contains(Normalization::WhitespaceTrimmed));
    let written = line(&event, Some(ARRIVAL));
    assert_eq!(written["level_id"], "level-03");
    assert_eq!(written["inventory"]["gold"], 3);
    assert_eq!(written["platform"], "android");
}

#[test]
fn a_client_server_timestamp_is_replaced() {
    let raw = with("server_timestamp", 42.into());
    let event = parse(&raw).expect("valid");
    assert!(
        event
            .normalizations
            .contains(Normalization::ClientServerTimestampDropped)
    );
    assert_eq!(line(&event, Some(ARRIVAL))["server_timestamp"], ARRIVAL);
    assert!(line(&event, None).get("server_timestamp").is_none());
}

#[test]
fn empty_optionals_are_dropped_and_pretty_json_becomes_one_line() {
    let mut map = valid();
    map.insert("level_id".into(), "".into());
    map.insert("position_x".into(), serde_json::Value::Null);
    let raw = serde_json::to_vec_pretty(&map).expect("json");
    let event = parse(&raw).expect("valid");
    assert!(event.normalizations.contains(Normalization::EmptyOptionalDropped));
    let written = line(&event, None);
    assert!(written.get("level_id").is_none() && written.get("position_x").is_none());
    // Pretty-printed but otherwise clean: re-serialized, nothing counted as normalized.
    let raw = serde_json::to_vec_pretty(&valid()).expect("json");
    let event = parse(&raw).expect("valid");
    assert!(event.normalizations.is_empty());
    assert_eq!(line(&event, None), serde_json::Value::Object(valid()));
}

#[test]
fn escaped_strings_are_understood() {
    let raw = format!(
        "{{\"event_id\":\"{EVENT_ID}\",\"client_id\":\"{CLIENT_ID}\",\"app_name\":\"g\",\"event_version\":\"1\",\"event_type\":\"caf\\u00e9 \\\"x\\\"\",\"event_timestamp\":1,\"level\\u005fid\":\"a\"}}"
    );
    let event = parse(raw.as_bytes()).expect("valid");
    assert_eq!(event.event_type, "café \"x\"");
    assert_eq!(event.level_id.as_deref(), Some("a"), "escaped keys are the same keys");
    rejected(
        format!("{{\"event_id\":\"{EVENT_ID}\",\"client_id\":\"{CLIENT_ID}\",\"app_name\":\"g\",\"event_version\":\"1\",\"event_timestamp\":1,\"event_type\":\"a\\u0000b\"}}").as_bytes(),
        Reason::ControlCharacters,
        Some("event_type"),
    );
}

fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[ a-zA-Z0-9é레._-]{{1,{max}}}")).expect("regex")
}

prop_compose! {
    fn event_json()(
        upper_id in any::<bool>(),
        app_name in "[A-Za-z0-9._-]{1,64}",
        event_version in text(20),
        event_type in text(60),
        ts in 0i64..=ARRIVAL,
        float_ts in any::<bool>(),
        level in proptest::option::of(text(20)),
        x in proptest::option::of(-1e6f64..1e6),
        null_y in any::<bool>(),
        extra in proptest::option::of("[a-z]{1,8}"),
        pretty in any::<bool>(),
        pad in any::<bool>(),
    ) -> Vec<u8> {
        let mut map = serde_json::Map::new();
        let id = if upper_id { EVENT_ID.to_uppercase() } else { EVENT_ID.to_string() };
        map.insert("event_id".into(), if pad { format!(" {id}\u{3000}") } else { id }.into());
        map.insert("client_id".into(), CLIENT_ID.into());
        map.insert("app_name".into(), app_name.into());
        map.insert("event_version".into(), event_version.into());
        map.insert("event_type".into(), event_type.into());
        map.insert("event_timestamp".into(), if float_ts { (ts as f64).into() } else { ts.into() });
        if let Some(level) = level { map.insert("level_id".into(), level.into()); }
        if let Some(x) = x { map.insert("position_x".into(), x.into()); }
        if null_y { map.insert("position_y".into(), serde_json::Value::Null); }
        if let Some(extra) = extra { map.insert(format!("x_{extra}"), extra.into()); }
        if pretty { serde_json::to_vec_pretty(&map).expect("json") } else { serde_json::to_vec(&map).expect("json") }
    }
}

proptest! {
    #[test]
    fn normalizing_is_idempotent(raw in event_json()) {
        let rules = Rules::default();
        // Generated text may be all spaces, which trims to empty: a rejection, not a panic.
        let Ok(first) = Event::parse(&raw, ARRIVAL, &rules) else { return Ok(()) };
        let mut once = Vec::new();
        first.write_json_line(None, &mut once);
        let second = Event::parse(&once, ARRIVAL, &rules).expect("a normalized event stays valid");
        prop_assert!(second.normalizations.is_empty(), "{:?}", second.normalizations);
        let mut twice = Vec::new();
        second.write_json_line(None, &mut twice);
        prop_assert_eq!(String::from_utf8_lossy(&once), String::from_utf8_lossy(&twice));
    }

    #[test]
    fn arbitrary_bytes_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = Event::parse(&raw, ARRIVAL, &Rules::default());
    }
}

#[test]
fn event_data_is_kept_value_equal_in_the_lake_line() {
    let data = serde_json::json!({
        "sku": "sword-01", "price": 4.99, "currency": "EUR",
        "cause": {"weapon": ["axe", 2], "note": "Zoë ☃ \"quoted\""}
    });
    for raw in [
        with("event_data", data.clone()),
        with("event_data", serde_json::Value::Null),
    ] {
        let event = parse(&raw).expect("valid");
        let sent: serde_json::Value = serde_json::from_slice(&raw).expect("json");
        assert_eq!(line(&event, Some(ARRIVAL))["event_data"], sent["event_data"]);
    }
}

#[test]
fn event_data_rejections_have_their_own_reasons() {
    let field = Some("event_data");
    rejected(
        &with("event_data", serde_json::json!([1, 2])),
        Reason::EventDataNotAnObject,
        field,
    );
    rejected(
        &with("event_data", serde_json::json!("text")),
        Reason::EventDataNotAnObject,
        field,
    );
    let big = serde_json::json!({"blob": "x".repeat(event_model::event_data::DEFAULT_MAX_BYTES)});
    rejected(&with("event_data", big), Reason::EventDataTooLarge, field);
    let mut deep = serde_json::json!({});
    for _ in 0..event_model::event_data::DEFAULT_MAX_DEPTH {
        deep = serde_json::json!({ "d": deep });
    }
    rejected(&with("event_data", deep), Reason::EventDataTooDeep, field);
    rejected(
        &with("event_data", serde_json::json!({"a\u{1}": 1})),
        Reason::EventDataInvalidKey,
        field,
    );
    let huge = String::from_utf8(with("event_data", serde_json::json!({"n": 1})))
        .expect("utf-8")
        .replace(r#"{"n":1}"#, r#"{"n":1e999}"#);
    rejected(huge.as_bytes(), Reason::EventDataInvalidNumber, field);
    // Bounds are settings.
    let strict = Rules {
        max_event_data_bytes: 10,
        ..Rules::default()
    };
    let small = with("event_data", serde_json::json!({"sku": "sword-01"}));
    assert_eq!(
        Event::parse(&small, ARRIVAL, &strict).expect_err("too large").reason,
        Reason::EventDataTooLarge
    );
}

#[test]
fn only_fields_outside_the_schema_count_as_unknown() {
    assert!(
        !parse(&serde_json::to_vec(&valid()).expect("json"))
            .expect("valid")
            .has_unknown_fields()
    );
    let with_data = with("event_data", serde_json::json!({"sku": "a"}));
    assert!(!parse(&with_data).expect("valid").has_unknown_fields());
    let newer = with("new_field", serde_json::json!(1));
    assert!(parse(&newer).expect("valid").has_unknown_fields());
}

/// A schema sees the event as the lake line holds it: normalized, without
/// `server_timestamp`, whole-number positions as integers (a draft-04 `integer`
/// refuses `5.0`), `event_data` and unknown fields as sent.
#[test]
fn a_schema_sees_the_normalized_event_with_whole_positions_as_integers() {
    let mut schemas = event_model::EventSchemas::new(event_model::SchemaMode::Known);
    let key = event_model::schema::SchemaKey::from_path("SampleGame/player_death.json")
        .expect("layout")
        .expect("a schema");
    let draft4 = r#"{
        "$schema": "http://json-schema.org/draft-04/schema#",
        "required": ["position_x", "event_data", "platform"],
        "not": {"required": ["server_timestamp"]},
        "properties": {
            "position_x": {"type": "integer"},
            "event_id": {"pattern": "^[0-9a-f-]+$"},
            "event_data": {"required": ["cause"]}
        }
    }"#;
    schemas.add(key, draft4).expect("a draft-04 schema");
    let rules = Rules {
        schemas: std::sync::Arc::new(schemas),
        ..Rules::default()
    };
    let event = |position: serde_json::Value| {
        let mut map = valid();
        map.insert("position_x".into(), position);
        map.insert("event_id".into(), EVENT_ID.to_uppercase().into());
        map.insert("server_timestamp".into(), 1.into());
        map.insert("event_data".into(), serde_json::json!({"cause": "lava"}));
        map.insert("platform".into(), "android".into());
        serde_json::to_vec(&map).expect("json")
    };
    let whole = event(5.into());
    Event::parse(&whole, ARRIVAL, &rules).expect("5 is an integer; the id is matched lower-cased");
    let fraction = event(serde_json::json!(5.5));
    let rejection = Event::parse(&fraction, ARRIVAL, &rules).expect_err("5.5 is not");
    assert_eq!(rejection.reason, Reason::SchemaViolation);
    assert_eq!(rejection.field.as_deref(), Some("position_x"));
    assert!(rejection.detail.starts_with("at /position_x: "), "{}", rejection.detail);
}
