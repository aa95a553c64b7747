//! cron-connector: warehouse maintenance on cron schedules (VACUUM, ANALYZE,
//! retention), run by one instance at a time under a singleton lease.
//!
//! Today the service reports health and stops cleanly; the jobs arrive with the
//! warehouse library and the singleton lease.

use clap::Parser;
use pipeline_runtime::config::parse_resource_name;
use pipeline_runtime::{AwsArgs, ServiceArgs, ServiceContext};

pub const SERVICE: &str = "cron-connector";

/// Settings of the cron-connector.
#[derive(Debug, Clone, Parser)]
#[command(name = SERVICE, version, about = "Scheduled warehouse maintenance, one instance at a time")]
pub struct Config {
    /// DynamoDB lease table holding the singleton lease (created if missing).
    #[arg(long = "cron-connector-lease-table", env = "CRON_CONNECTOR_LEASE_TABLE", default_value = "cron-connector", value_parser = parse_resource_name)]
    pub lease_table: String,

    #[command(flatten)]
    pub service: ServiceArgs,

    #[command(flatten)]
    pub aws: AwsArgs,
}

/// Why the connector stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {}

/// Runs the connector until `context.shutdown` is cancelled.
pub async fn run(config: Config, context: ServiceContext) -> Result<(), Error> {
    context.health.set_ready(true);
    tracing::info!(lease_table = %config.lease_table, "no jobs configured yet; idle until shutdown");
    context.shutdown.cancelled().await;
    Ok(())
}
