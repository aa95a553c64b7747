//! The cron-connector binary: documented settings, fast config errors, health, clean SIGTERM.

use clap::CommandFactory;
use pipeline_tests::service_checks;

const BIN: &str = env!("CARGO_BIN_EXE_cron-connector");

#[test]
fn help_documents_every_setting() {
    pipeline_tests::help::assert_every_setting_documented(BIN, &cron_connector::Config::command());
}

#[test]
fn a_bad_env_value_fails_at_start_naming_the_variable() {
    service_checks::assert_bad_env_value_is_named(BIN);
}

#[tokio::test]
async fn becomes_ready_and_stops_cleanly_on_sigterm() {
    service_checks::assert_ready_then_clean_stop_on_sigterm(BIN).await;
}
