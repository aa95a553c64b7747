//! Events stage, pure part: which player was on which level when, and the one update
//! per player a batch needs.

use std::collections::HashMap;

use event_model::snowplow;
use event_model::{Event, Reason, Rejection, Rules};
use serde_json::Value;

/// A player seen on a level at an event time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sighting {
    pub player: String,
    pub level: String,
    /// Event time, ms since the epoch.
    pub timestamp: i64,
    /// The record it was read from (its index in the batch).
    pub record: usize,
}

/// Why a record gives no sighting (the `Reason` dimension of `SkippedEvents`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// Not a valid event or line: why, under the event model's rules and reasons.
    Invalid(Rejection),
    /// A KPL aggregate that could not be read (its reason).
    BadAggregate(&'static str),
    /// A valid event without a level: nothing to place.
    NoLevel,
    /// A Snowplow level context without a player.
    NoPlayer,
    /// Older than the idle timeout: it would bring back a pruned player on an old level.
    TooOld,
}

impl Skip {
    pub fn reason(&self) -> &'static str {
        match self {
            Skip::Invalid(rejection) => rejection.reason.as_str(),
            Skip::BadAggregate(reason) => reason,
            Skip::NoLevel => "no_level",
            Skip::NoPlayer => "no_player",
            Skip::TooOld => "older_than_idle_timeout",
        }
    }
}

/// Reads a telemetry JSON record: player = `client_id`, level = `level_id`, time = `event_timestamp`.
pub fn sighting_from_json(
    data: &[u8],
    arrival_ms: i64,
    now_ms: i64,
    idle_timeout_ms: i64,
    rules: &Rules,
) -> Result<Sighting, Skip> {
    let event = Event::parse(data, arrival_ms, rules).map_err(Skip::Invalid)?;
    let level = event.level_id.ok_or(Skip::NoLevel)?;
    if event.event_timestamp < now_ms.saturating_sub(idle_timeout_ms) {
        return Err(Skip::TooOld);
    }
    Ok(Sighting {
        player: event.client_id.into_owned(),
        level: level.into_owned(),
        timestamp: event.event_timestamp,
        record: 0,
    })
}

/// What the records on the stream are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InputFormat {
    /// Telemetry JSON for records starting with `{`, Snowplow enriched TSV otherwise.
    Auto,
    /// The telemetry event of the pipeline.
    Json,
    /// Snowplow enriched events (131 tab-separated fields).
    Snowplow,
}

/// Where the Snowplow path finds players and levels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnowplowLevelContext {
    /// The JSON key of the context, e.g. `com_codecombat_level_context_1`.
    pub key: String,
}

impl SnowplowLevelContext {
    /// From an Iglu URI such as `iglu:com.codecombat/level_context/jsonschema/1-0-0`.
    pub fn from_schema(schema: &str) -> Option<Self> {
        snowplow::schema_key(schema).map(|key| Self { key })
    }
}

/// Reads a Snowplow enriched event: time = `collector_tstamp`, player = `user_id` and
/// level = `level_slug` of the level context (the tracker's and the enrichments' items
/// under one key, as the Analytics SDK gives them).
///
/// Of several items, the one the tutorial's Lambda ends on: it applies every item that
/// has both values not null, in order, so the last such item wins. Its values then pass
/// the same rules as telemetry's (a Lambda would have sent an empty or oversized
/// `user_id` to DynamoDB and failed its whole batch for ever).
pub fn sighting_from_snowplow(
    data: &[u8],
    now_ms: i64,
    idle_timeout_ms: i64,
    context: &SnowplowLevelContext,
) -> Result<Sighting, Skip> {
    let line = std::str::from_utf8(data).map_err(|error| {
        Skip::Invalid(Rejection::new(
            Reason::InvalidUtf8,
            format!("invalid UTF-8 at byte {}", error.valid_up_to()),
        ))
    })?;
    let event = snowplow::to_json(line).map_err(|e| Skip::Invalid(e.into()))?;
    let items = event
        .get(&format!("contexts_{}", context.key))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let present = |item: &Value, key: &str| item.get(key).is_some_and(|v| !v.is_null());
    let Some(chosen) = items
        .iter()
        .rev()
        .find(|item| present(item, "user_id") && present(item, "level_slug"))
    else {
        return Err(if items.iter().any(|item| present(item, "level_slug")) {
            Skip::NoPlayer
        } else {
            Skip::NoLevel
        });
    };
    let text = |key: &str| {
        let field = format!("contexts_{}.{key}", context.key);
        match chosen.get(key) {
            Some(Value::String(text)) => Ok((field, text.as_str())),
            _ => Err(Skip::Invalid(Rejection::field(
                Reason::WrongType,
                &field,
                "a string is expected",
            ))),
        }
    };
    let (player_field, player) = text("user_id")?;
    let (level_field, level) = text("level_slug")?;
    let player = event_model::player_id(&player_field, player).map_err(Skip::Invalid)?;
    let level = event_model::level_id(&level_field, level).map_err(Skip::Invalid)?;
    let timestamp = event
        .get("collector_tstamp")
        .and_then(Value::as_str)
        .and_then(snowplow::timestamp_ms)
        .ok_or_else(|| {
            Skip::Invalid(Rejection::field(
                Reason::SnowplowBadField,
                "collector_tstamp",
                "missing",
            ))
        })?;
    if timestamp < now_ms.saturating_sub(idle_timeout_ms) {
        return Err(Skip::TooOld);
    }
    Ok(Sighting {
        player: player.to_string(),
        level: level.to_string(),
        timestamp,
        record: 0,
    })
}

/// The format of one record under `format`.
pub fn detect(format: InputFormat, data: &[u8]) -> InputFormat {
    match format {
        InputFormat::Auto => match data.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') | None => InputFormat::Json,
            Some(_) if data.contains(&b'\t') => InputFormat::Snowplow,
            Some(_) => InputFormat::Json,
        },
        fixed => fixed,
    }
}

/// The latest sighting of each player (by event time; on a tie the later record
/// wins), in first-seen order: one conditional write per player instead of one per event.
pub fn latest_per_player(sightings: impl IntoIterator<Item = Sighting>) -> Vec<Sighting> {
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut latest: Vec<Sighting> = Vec::new();
    for sighting in sightings {
        match index.get(&sighting.player) {
            Some(&i) => {
                if sighting.timestamp >= latest[i].timestamp {
                    latest[i] = sighting;
                }
            }
            None => {
                index.insert(sighting.player.clone(), latest.len());
                latest.push(sighting);
            }
        }
    }
    latest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(player: &str, level: &str, timestamp: i64) -> Sighting {
        Sighting {
            player: player.into(),
            level: level.into(),
            timestamp,
            record: 0,
        }
    }

    #[test]
    fn keeps_the_latest_by_event_time_not_by_arrival() {
        let latest = latest_per_player([
            s("a", "1", 10),
            s("b", "1", 5),
            s("a", "3", 30),
            s("a", "2", 20), // late arrival of an older event
            s("b", "2", 5),  // same time: the later record wins
        ]);
        assert_eq!(latest, vec![s("a", "3", 30), s("b", "2", 5)]);
    }

    #[test]
    fn snowplow_sightings_and_detection() {
        let context =
            SnowplowLevelContext::from_schema("iglu:com.codecombat/level_context/jsonschema/1-0-0").expect("schema");
        let line = |contexts: &str, derived: &str| {
            let mut fields = vec![""; 131];
            fields[3] = "2026-01-01 00:00:00.500";
            fields[6] = "c6ef3124-b53a-4b13-a233-0088f79dcbcb";
            fields[52] = contexts;
            fields[122] = derived;
            fields.join("\t")
        };
        let level = r#"{"schema":"iglu:com.snowplowanalytics.snowplow/contexts/jsonschema/1-0-0","data":[{"schema":"iglu:com.codecombat/level_context/jsonschema/1-0-0","data":{"user_id":"u1","level_slug":"forest"}}]}"#;
        let now = 1_767_225_600_500;
        let from_contexts = sighting_from_snowplow(line(level, "").as_bytes(), now, 300_000, &context);
        assert_eq!(from_contexts, Ok(s("u1", "forest", now)));
        let from_derived = sighting_from_snowplow(line("", level).as_bytes(), now, 300_000, &context);
        assert_eq!(from_derived, Ok(s("u1", "forest", now)));
        assert_eq!(
            sighting_from_snowplow(line("", "").as_bytes(), now, 300_000, &context),
            Err(Skip::NoLevel)
        );
        let reason = |data: &[u8]| {
            sighting_from_snowplow(data, now, 300_000, &context)
                .err()
                .map(|skip| skip.reason())
        };
        assert_eq!(reason(line("{oops", "").as_bytes()), Some("snowplow_bad_field"));
        assert_eq!(reason(b"a\tb"), Some("snowplow_field_count"));
        assert_eq!(reason(&[0xff, b'\t']), Some("invalid_utf8"));
        assert_eq!(
            detect(InputFormat::Auto, line(level, "").as_bytes()),
            InputFormat::Snowplow
        );
        assert_eq!(detect(InputFormat::Auto, b" {\"a\":1}"), InputFormat::Json);
        assert_eq!(detect(InputFormat::Json, b"a\tb"), InputFormat::Json);
    }

    /// A Snowplow line whose level context holds `items` (JSON objects).
    fn line_with_items(items: &[&str]) -> String {
        let data: Vec<String> = items
            .iter()
            .map(|item| format!(r#"{{"schema":"iglu:com.codecombat/level_context/jsonschema/1-0-0","data":{item}}}"#))
            .collect();
        let contexts = format!(
            r#"{{"schema":"iglu:com.snowplowanalytics.snowplow/contexts/jsonschema/1-0-0","data":[{}]}}"#,
            data.join(",")
        );
        let mut fields = vec![String::new(); 131];
        fields[3] = "2026-01-01 00:00:00.500".into();
        fields[52] = contexts;
        fields.join("\t")
    }

    #[test]
    fn snowplow_players_and_levels_pass_telemetrys_rules() {
        let context =
            SnowplowLevelContext::from_schema("iglu:com.codecombat/level_context/jsonschema/1-0-0").expect("schema");
        let now = 1_767_225_600_500;
        let read = |items: &[&str]| sighting_from_snowplow(line_with_items(items).as_bytes(), now, 300_000, &context);
        let rejected = |items: &[&str]| match read(items) {
            Err(Skip::Invalid(rejection)) => (rejection.reason.as_str(), rejection.field.unwrap_or_default()),
            other => panic!("expected a rejection, got {other:?}"),
        };
        assert_eq!(
            rejected(&[r#"{"user_id":"","level_slug":"forest"}"#]),
            (
                "empty_value",
                "contexts_com_codecombat_level_context_1.user_id".to_string()
            )
        );
        let long = format!(r#"{{"user_id":"{}","level_slug":"forest"}}"#, "u".repeat(3 * 1024));
        assert_eq!(rejected(&[&long]).0, "too_long");
        assert_eq!(rejected(&[r#"{"user_id":"u1","level_slug":"  "}"#]).0, "empty_value");
        assert_eq!(
            rejected(&[r#"{"user_id":"u1","level_slug":"a\u0007b"}"#]).0,
            "control_characters"
        );
        assert_eq!(rejected(&[r#"{"user_id":7,"level_slug":"forest"}"#]).0, "wrong_type");
        // The Lambda applies each complete item in turn: the last complete one wins,
        // items with a null value are passed over.
        assert_eq!(
            read(&[
                r#"{"user_id":"u1","level_slug":"first"}"#,
                r#"{"user_id":"u1","level_slug":"last"}"#,
                r#"{"user_id":null,"level_slug":"ignored"}"#,
            ]),
            Ok(s("u1", "last", now))
        );
        assert_eq!(
            read(&[r#"{"user_id":null,"level_slug":"forest"}"#]),
            Err(Skip::NoPlayer)
        );
        assert_eq!(read(&[r#"{"other":1}"#]), Err(Skip::NoLevel));
        // A level id may hold any printable text, the old transition separator included.
        assert_eq!(
            read(&[r#"{"user_id":"u1","level_slug":"a→b"}"#]),
            Ok(s("u1", "a→b", now))
        );
    }

    #[test]
    fn json_sightings() {
        let now = 1_767_225_600_000;
        let event = |level: &str, ts: i64| {
            format!(
                r#"{{"event_id":"00000000-0000-4000-8000-000000000001","client_id":"00000000-0000-4000-8000-00000000000A","app_name":"g","event_version":"1","event_type":"t","event_timestamp":{ts}{level}}}"#
            )
        };
        let rules = Rules::default();
        let sighting = sighting_from_json(
            event(",\"level_id\":\"l1\"", now - 5).as_bytes(),
            now,
            now,
            300_000,
            &rules,
        )
        .expect("sighting");
        assert_eq!(sighting, s("00000000-0000-4000-8000-00000000000a", "l1", now - 5));
        assert_eq!(
            sighting_from_json(event("", now).as_bytes(), now, now, 300_000, &rules),
            Err(Skip::NoLevel)
        );
        assert_eq!(
            sighting_from_json(
                event(",\"level_id\":\"l1\"", now - 300_001).as_bytes(),
                now,
                now,
                300_000,
                &rules
            ),
            Err(Skip::TooOld)
        );
        assert_eq!(
            sighting_from_json(b"{", now, now, 300_000, &rules).map_err(|skip| skip.reason()),
            Err("malformed_json")
        );
    }
}
