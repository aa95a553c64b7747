//! The s3-connector's hot path on one core: parse, validate, normalize, serialize and
//! gzip realistic ~300-byte events; then gzip alone over the same output bytes, and
//! the ratio. `cargo bench -p event-model` prints the table.

use std::hint::black_box;
use std::io::Write;
use std::time::{Duration, Instant};

use std::sync::Arc;

use event_model::schema::SchemaKey;
use event_model::{BatchFile, Event, EventSchemas, Rules, SchemaMode};
use flate2::Compression;
use flate2::write::GzEncoder;

const EVENTS: usize = 20_000;
const ARRIVAL: i64 = 1_767_225_600_000;

fn uuid(rng: &mut u64) -> String {
    let mut hex = String::new();
    for _ in 0..4 {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        hex.push_str(&format!("{:08x}", *rng as u32));
    }
    format!(
        "{}-{}-4{}-a{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

const TYPES: [&str; 5] = [
    "player_death",
    "level_start",
    "level_complete",
    "item_pickup",
    "session_start",
];

/// Events shaped like the generator's: a few hundred players, deaths clustered on a map.
fn sample() -> Vec<Vec<u8>> {
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    let players: Vec<String> = (0..500).map(|_| uuid(&mut rng)).collect();
    (0..EVENTS)
        .map(|i| {
            let event_id = uuid(&mut rng);
            format!(
                r#"{{"event_id":"{event_id}","client_id":"{}","app_name":"SampleGame","event_version":"1.0","event_type":"{}","event_timestamp":{},"app_version":"2.3.1","level_id":"level-{:02}","position_x":{:.2},"position_y":{:.2},"platform":"android"}}"#,
                players[i % players.len()],
                TYPES[i % TYPES.len()],
                ARRIVAL - 5_000 + (i as i64 % 3_000),
                i % 12,
                (rng % 100_000) as f64 / 97.0,
                (rng % 70_000) as f64 / 89.0,
            )
            .into_bytes()
        })
        .collect()
}

/// Best time of several runs of `f`, each long enough to be measured.
fn best(mut f: impl FnMut()) -> Duration {
    (0..7)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn hot_path(events: &[Vec<u8>], rules: &Rules, level: u32) -> usize {
    let mut file = BatchFile::new(level);
    for raw in events {
        if let Ok(event) = Event::parse(raw, ARRIVAL, rules) {
            event.write_json_line(Some(ARRIVAL), file.buffer());
            file.line_written();
        }
    }
    file.finish().len()
}

fn gzip_alone(lines: &[u8], level: u32) -> usize {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::new(level));
    for chunk in lines.chunks(64 * 1024) {
        encoder.write_all(chunk).expect("compress");
    }
    encoder.finish().expect("finish").len()
}

fn main() {
    let events = sample();
    let rules = Rules::default();
    // For profiling the parser alone: `PARSE_ONLY=1 perf record <bench binary>`.
    if std::env::var_os("PARSE_ONLY").is_some() {
        for _ in 0..300 {
            for raw in &events {
                black_box(Event::parse(black_box(raw), ARRIVAL, &rules).is_ok());
            }
        }
        return;
    }
    let input_bytes: usize = events.iter().map(Vec::len).sum();
    let mut lines = Vec::new();
    for raw in &events {
        Event::parse(raw, ARRIVAL, &rules)
            .expect("sample events are valid")
            .write_json_line(Some(ARRIVAL), &mut lines);
    }
    println!(
        "{EVENTS} events, {:.0} bytes each on average, {} bytes as JSON lines",
        input_bytes as f64 / EVENTS as f64,
        lines.len()
    );
    println!(
        "level | hot path events/s | hot path MB/s (in) | gzip alone events/s | gzip alone MB/s | ratio | compressed"
    );
    for level in [1, 3, 6] {
        let mut compressed = 0;
        let hot = best(|| compressed = black_box(hot_path(black_box(&events), &rules, level)));
        let gzip = best(|| {
            black_box(gzip_alone(black_box(&lines), level));
        });
        let rate = |d: Duration| EVENTS as f64 / d.as_secs_f64();
        println!(
            "{level:>5} | {:>17.0} | {:>18.1} | {:>19.0} | {:>15.1} | {:>5.2} | {:.1}x",
            rate(hot),
            input_bytes as f64 / hot.as_secs_f64() / 1e6,
            rate(gzip),
            lines.len() as f64 / gzip.as_secs_f64() / 1e6,
            gzip.as_secs_f64() / hot.as_secs_f64(),
            lines.len() as f64 / compressed as f64,
        );
    }
    let with = with_event_data(&events, &rules);
    with_schemas(&with, &rules);
    floor(&events);
    typed(&events);
    let parse_only = best(|| {
        for raw in &events {
            black_box(Event::parse(black_box(raw), ARRIVAL, &rules).is_ok());
        }
    });
    println!(
        "parse + validate alone: {:.0} events/s",
        EVENTS as f64 / parse_only.as_secs_f64()
    );
}
/// The hot path at level 6 on the same events each carrying a ~300-byte `event_data`
/// (checked, kept verbatim), against the events without it.
fn with_event_data(events: &[Vec<u8>], rules: &Rules) -> Vec<Vec<u8>> {
    let data = r#","event_data":{"sku":"skin-dragon-0042","price":9.99,"currency":"EUR","store":"in-game","bundle":{"items":["skin","emote","banner"],"discount":0.25},"cause":null,"score":12345,"seconds":187.5,"tags":["season-3","weekend-offer","first-purchase"],"note":"bought after level-04 boss fight..........................."}}"#;
    let with: Vec<Vec<u8>> = events
        .iter()
        .map(|raw| {
            let mut raw = raw.clone();
            raw.pop();
            raw.extend_from_slice(data.as_bytes());
            raw
        })
        .collect();
    assert!(Event::parse(&with[0], ARRIVAL, rules).is_ok(), "valid with event_data");
    let without = best(|| {
        black_box(hot_path(black_box(events), rules, 6));
    });
    let carrying = best(|| {
        black_box(hot_path(black_box(&with), rules, 6));
    });
    println!(
        "level 6 with a {}-byte event_data: {:.0} events/s, {:.2} of without it ({:.0} events/s)",
        data.len() - ",\"event_data\":".len() - 1,
        EVENTS as f64 / carrying.as_secs_f64(),
        without.as_secs_f64() / carrying.as_secs_f64(),
        EVENTS as f64 / without.as_secs_f64(),
    );
    with
}

/// A schema per event type that checks every field of the bench's `event_data`.
const SCHEMA: &str = r#"{
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["level_id", "event_data"],
    "properties": {
        "level_id": {"type": "string", "pattern": "^level-[0-9]{2,}$"},
        "position_x": {"type": "number", "minimum": 0},
        "position_y": {"type": "number", "minimum": 0},
        "event_data": {
            "type": "object",
            "required": ["sku", "price", "currency"],
            "additionalProperties": false,
            "properties": {
                "sku": {"type": "string", "maxLength": 64},
                "price": {"type": "number", "exclusiveMinimum": 0},
                "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
                "store": {"enum": ["in-game", "web", "console"]},
                "bundle": {
                    "type": "object",
                    "properties": {
                        "items": {"type": "array", "items": {"type": "string"}, "maxItems": 20},
                        "discount": {"type": "number", "minimum": 0, "maximum": 1}
                    }
                },
                "cause": {"type": ["string", "null"]},
                "score": {"type": "integer", "minimum": 0},
                "seconds": {"type": "number", "minimum": 0},
                "tags": {"type": "array", "items": {"type": "string"}},
                "note": {"type": "string", "maxLength": 500}
            }
        }
    }
}"#;

/// The hot path at level 6 on the events with `event_data`, with `SCHEMA_MODE=strict`
/// and a schema for each of their types, against the same events without schemas.
fn with_schemas(with: &[Vec<u8>], rules: &Rules) {
    let mut schemas = EventSchemas::new(SchemaMode::Strict);
    for event_type in TYPES {
        let key = SchemaKey::from_path(&format!("SampleGame/{event_type}.json"))
            .expect("a schema path")
            .expect("a schema");
        schemas.add(key, SCHEMA).expect("a valid schema");
    }
    let validating = Rules {
        schemas: Arc::new(schemas),
        ..rules.clone()
    };
    assert!(
        with.iter().all(|raw| Event::parse(raw, ARRIVAL, &validating).is_ok()),
        "every event matches"
    );
    let off = best(|| {
        black_box(hot_path(black_box(with), rules, 6));
    });
    let on = best(|| {
        black_box(hot_path(black_box(with), &validating, 6));
    });
    println!(
        "level 6 with event_data and schema validation on: {:.0} events/s, {:.2} of validation off ({:.0} events/s)",
        EVENTS as f64 / on.as_secs_f64(),
        off.as_secs_f64() / on.as_secs_f64(),
        EVENTS as f64 / off.as_secs_f64(),
    );
}

/// What serde_json costs at the least (skipping every value) and UTF-8 validation alone.
fn floor(events: &[Vec<u8>]) {
    let d = best(|| {
        for raw in events {
            black_box(serde_json::from_slice::<serde::de::IgnoredAny>(black_box(raw)).is_ok());
        }
    });
    println!("serde_json IgnoredAny: {:.0} events/s", EVENTS as f64 / d.as_secs_f64());
    let d = best(|| {
        for raw in events {
            black_box(std::str::from_utf8(black_box(raw)).is_ok());
        }
    });
    println!("utf8: {:.0} events/s", EVENTS as f64 / d.as_secs_f64());
}
#[derive(serde::Deserialize)]
#[allow(dead_code)] // only deserialized
struct Typed<'a> {
    event_id: &'a str,
    client_id: &'a str,
    app_name: &'a str,
    event_version: &'a str,
    event_type: &'a str,
    event_timestamp: i64,
    app_version: Option<&'a str>,
    level_id: Option<&'a str>,
    position_x: Option<f64>,
    position_y: Option<f64>,
}
/// A plain borrowed serde derive, without any validation: the parser's yardstick.
fn typed(events: &[Vec<u8>]) {
    let d = best(|| {
        for raw in events {
            black_box(serde_json::from_slice::<Typed>(black_box(raw)).is_ok());
        }
    });
    println!("serde derive borrowed: {:.0} events/s", EVENTS as f64 / d.as_secs_f64());
}
