//! The consumer at scale, by the simulator: balance times and lease-table cost for
//! 1,000 shards × 50 workers and 4,000 × 200, beside the Java KCL 2.x's.
//! `cargo bench -p consumer-sim --bench scale` (SCALE_FLEETS=1000x50,4000x200 to choose).

use consumer_sim::scale::{ScaleSettings, markdown, measure};

fn main() {
    let fleets = std::env::var("SCALE_FLEETS").unwrap_or_else(|_| "1000x50,4000x200".to_string());
    let mut reports = Vec::new();
    for fleet in fleets.split(',').filter(|f| !f.is_empty()) {
        let Some((shards, workers)) = fleet
            .split_once('x')
            .and_then(|(s, w)| Some((s.parse().ok()?, w.parse().ok()?)))
        else {
            eprintln!("SCALE_FLEETS: {fleet:?} is not <shards>x<workers>");
            std::process::exit(2);
        };
        let report = measure(&ScaleSettings::new(shards, workers));
        eprintln!("{shards} × {workers}: simulated in {:.1} s", report.wall.as_secs_f64());
        for (at, violation) in &report.violations {
            eprintln!("  violation at {at:?}: {violation}");
        }
        reports.push(report);
    }
    println!("{}", markdown(&reports));
}
