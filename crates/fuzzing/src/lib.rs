//! The properties the fuzz targets in `fuzz/` check, one function per target. Each
//! takes arbitrary bytes and panics only when a property fails: parsing never panics,
//! and whatever a parser accepts survives its own writer unchanged.

use bytes::Bytes;
use event_model::{Event, FilePointer, Rules};

/// Arrival time of fuzzed records (any fixed time; validation is relative to it).
const ARRIVAL_MS: i64 = 1_767_225_600_000;

/// Telemetry: parse and validate; an accepted event, written as a lake line and
/// parsed again, is accepted again and written to the same JSON (normalizing twice
/// changes nothing; the field order may differ, as a verbatim copy keeps the sender's).
pub fn event(data: &[u8]) {
    let rules = Rules::default();
    let Ok(event) = Event::parse(data, ARRIVAL_MS, &rules) else {
        return;
    };
    let mut first = Vec::new();
    event.write_json_line(Some(ARRIVAL_MS), &mut first);
    // The line carries server_timestamp, so it may exceed the input's size limit.
    let relaxed = Rules {
        max_event_bytes: usize::MAX,
        ..rules
    };
    let again = Event::parse(&first, ARRIVAL_MS, &relaxed).unwrap_or_else(|r| {
        panic!(
            "a written event is rejected: {r:?}: {}",
            String::from_utf8_lossy(&first)
        )
    });
    let mut second = Vec::new();
    again.write_json_line(Some(ARRIVAL_MS), &mut second);
    let json = |line: &[u8]| serde_json::from_slice::<serde_json::Value>(line).expect("a written line is JSON");
    assert_eq!(
        json(&first),
        json(&second),
        "writing a re-parsed event changed it: {}",
        String::from_utf8_lossy(&first)
    );
}

/// Snowplow enriched TSV: any text is parsed or refused, and what is parsed is JSON.
pub fn snowplow(data: &[u8]) {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(map) = event_model::snowplow::to_json(line) {
        serde_json::to_vec(&map).expect("a parsed Snowplow event serializes");
    }
}

/// KPL aggregates: any record is de-aggregated or refused; an accepted aggregate,
/// aggregated again from its user records, gives the same user records.
pub fn kpl(data: &[u8]) {
    let data = Bytes::copy_from_slice(data);
    let Ok(Some(records)) = shard_consumer::kpl::deaggregate(&data) else {
        return;
    };
    let pairs: Vec<(String, Bytes)> = records
        .iter()
        .map(|r| (r.partition_key.clone(), r.data.clone()))
        .collect();
    let rebuilt = shard_consumer::kpl::aggregate(&pairs);
    let again = shard_consumer::kpl::deaggregate(&rebuilt)
        .expect("our own aggregate is valid")
        .expect("our own aggregate is an aggregate");
    let again: Vec<(String, Bytes)> = again.into_iter().map(|r| (r.partition_key, r.data)).collect();
    assert_eq!(pairs, again, "re-aggregating changed the user records");
}

/// File pointers on the `files` stream: parsed or refused; a parsed one round-trips.
pub fn pointer(data: &[u8]) {
    if let Ok(pointer) = FilePointer::from_json(data) {
        let again = FilePointer::from_json(&pointer.to_json()).expect("a written pointer parses");
        assert_eq!(pointer, again);
    }
}

/// COPY manifests: parsed or refused; a parsed one round-trips.
pub fn manifest(data: &[u8]) {
    if let Ok(manifest) = serde_json::from_slice::<warehouse::manifest::Manifest>(data) {
        let again: warehouse::manifest::Manifest =
            serde_json::from_slice(&manifest.to_json()).expect("a written manifest parses");
        assert_eq!(manifest, again);
    }
}

/// A target's checks over one input.
pub type Check = fn(&[u8]);

/// Every target by name, for the corpus test.
pub const TARGETS: [(&str, Check); 5] = [
    ("event", event),
    ("snowplow", snowplow),
    ("kpl", kpl),
    ("pointer", pointer),
    ("manifest", manifest),
];
