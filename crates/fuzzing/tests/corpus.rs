//! Every committed seed of `fuzz/corpus/<target>/` (and every crash found and kept in
//! `fuzz/regressions/<target>/`) passes its target's checks, so the corpora stay
//! meaningful and a fixed crash stays fixed, without a fuzzer in CI.

use std::path::Path;

#[test]
fn every_seed_and_regression_passes_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    for (name, check) in fuzzing::TARGETS {
        let mut seeds = 0;
        for folder in ["corpus", "regressions"] {
            let dir = root.join(folder).join(name);
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries.filter_map(Result::ok) {
                let data = std::fs::read(entry.path()).expect("seed");
                check(&data);
                seeds += 1;
            }
        }
        assert!(seeds >= 3, "fuzz/corpus/{name} has {seeds} seeds");
    }
}
