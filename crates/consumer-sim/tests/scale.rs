//! The scale measurement, small: every phase balances, no shard goes unread for long,
//! and the steady state costs far less than the KCL 2.x model.

use std::time::Duration;

use consumer_sim::scale::{ScaleSettings, measure};

#[test]
fn a_small_fleet_balances_in_every_phase_of_the_scale_simulation() {
    let mut settings = ScaleSettings::new(60, 6);
    settings.steady = Duration::from_secs(1800);
    settings.patience = Duration::from_secs(600);
    consumer_sim::log::install_from_env();
    let report = measure(&settings);
    println!("{}", consumer_sim::scale::markdown(std::slice::from_ref(&report)));
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    assert_eq!(report.phases.len(), 4);
    // The rolling deploy is six batches, each a worker started and one stopped.
    for (phase, within) in report.phases.iter().zip([180, 180, 180, 600]) {
        let balanced = phase
            .balanced_after
            .unwrap_or_else(|| panic!("{} never balanced: {phase:?}", phase.name));
        assert!(balanced < Duration::from_secs(within), "{phase:?}");
    }
    // Killed workers' shards wait for the failover time and a taker pass; graceful
    // hand-overs take one pass.
    let killed = &report.phases[1];
    assert!(killed.longest_unread <= settings.failover * 3, "{killed:?}");
    let deploy = &report.phases[3];
    assert!(deploy.longest_unread <= settings.failover * 2, "{deploy:?}");
    let ours = report.steady_total().dollars_per_month();
    let kcl = report.kcl.total().dollars_per_month();
    assert!(ours > 0.0 && ours * 5.0 < kcl, "ours {ours} vs KCL 2.x {kcl}");
}
