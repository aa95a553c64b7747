//! `sample-data/` is what its README's commands make, byte for byte: the generator
//! and the level pictures are deterministic.

use std::path::{Path, PathBuf};
use std::process::Command;

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
