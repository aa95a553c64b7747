//! The short chaos run of the test command: the whole pipeline, two instances of each
//! service, a SIGKILL every 3 s, a split and a merge, 10% of AWS calls failed; then
//! every invariant of DESIGN.md must hold. `deploy/local/chaos` runs a long one.

use pipeline_tests::chaos::{self, ChaosArgs};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_pipeline_keeps_its_invariants_under_chaos() {
    let report = chaos::run(&ChaosArgs::short()).await;
    println!("{}", report.table());
    let problems = report.problems();
    assert!(problems.is_empty(), "{}\n{}", report.table(), problems.join("\n"));
}
