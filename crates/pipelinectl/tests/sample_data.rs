//! `sample-data/` is what its README's commands make, byte for byte: the generator
//! and the level pictures are deterministic.

use std::path::{Path, PathBuf};
use std::process::Command;

use event_model::SchemaMode;

const BIN: &str = env!("CARGO_BIN_EXE_pipelinectl");

fn sample_data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sample-data")
}

fn pipelinectl(args: &[&str]) {
    let output = Command::new(BIN)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .args(args)
        .output()
        .expect("run pipelinectl");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn the_committed_sample_is_what_the_commands_make() {
    let dir = std::env::temp_dir().join(format!("sample-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let events = dir.join("events.jsonl");
    pipelinectl(&[
        "generate",
        "--output-file",
        events.to_str().expect("utf8 path"),
        "--seed=1",
        "--count=3000",
        "--players=100",
        "--levels=3",
        "--rate=20",
    ]);
    let committed = std::fs::read(sample_data().join("events.jsonl")).expect("sample-data/events.jsonl");
    assert!(
        std::fs::read(&events).expect("made") == committed,
        "events.jsonl differs"
    );
    assert_eq!(committed.iter().filter(|b| **b == b'\n').count(), 3000);

    for level in ["level-01", "level-02", "level-03"] {
        let made = dir.join(format!("{level}.png"));
        pipelinectl(&[
            "level-map",
            "--level",
            level,
            "--output",
            made.to_str().expect("utf8 path"),
        ]);
        let committed = std::fs::read(sample_data().join(format!("{level}.png"))).expect("committed picture");
        assert!(std::fs::read(&made).expect("made") == committed, "{level}.png differs");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// The schemas the sample ships: every event the generator makes matches them, in
/// strict mode (so every event type it sends has one).
#[test]
fn the_generators_events_match_the_sample_schemas_in_strict_mode() {
    let schemas = pipeline_runtime::schemas::load_directory(&sample_data().join("schemas"), SchemaMode::Strict)
        .expect("the sample schemas load");
    assert_eq!(schemas.len(), 6, "one per event type the generator sends");
    let rules = event_model::Rules {
        future_window_ms: i64::MAX / 2,
        schemas: std::sync::Arc::new(schemas),
        ..event_model::Rules::default()
    };
    let dir = std::env::temp_dir().join(format!("sample-schemas-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let more = dir.join("events.jsonl");
    // A longer game than the sample, on more levels, draws every kind of event_data.
    pipelinectl(&[
        "generate",
        "--output-file",
        more.to_str().expect("utf8 path"),
        "--seed=7",
        "--count=20000",
        "--players=300",
        "--levels=12",
        "--rate=1000",
    ]);
    let mut types = std::collections::BTreeMap::new();
    for file in [sample_data().join("events.jsonl"), more] {
        let text = std::fs::read_to_string(&file).expect("events");
        for line in text.lines() {
            let event = event_model::Event::parse(line.as_bytes(), i64::MAX / 4, &rules)
                .unwrap_or_else(|rejection| panic!("{rejection}: {line}"));
            *types.entry(event.event_type.to_string()).or_insert(0) += 1;
        }
    }
    assert_eq!(types.len(), 6, "{types:?}");
    let _ = std::fs::remove_dir_all(dir);
}
