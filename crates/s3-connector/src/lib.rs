//! s3-connector: reads the `telemetry` stream, validates and sanitizes each event,
//! writes valid events in gzipped JSON-lines batches to `events/…` in S3 (rejects to
//! `errors/…`), and publishes one pointer per batch on the `files` stream.
//!
//! Today the service checks its resources, reports health and stops cleanly; the
//! stream processing arrives with the shard consumer and the event model.

use clap::Parser;
use pipeline_runtime::config::parse_resource_name;
use pipeline_runtime::resources::{self, MissingResources, Resource};
use pipeline_runtime::{AwsArgs, ServiceArgs, ServiceContext};

pub const SERVICE: &str = "s3-connector";

/// Settings of the s3-connector.
#[derive(Debug, Clone, Parser)]
#[command(name = SERVICE, version, about = "Telemetry stream → validated, gzipped JSON-lines batches in S3 → pointers on the files stream")]
pub struct Config {
    /// Kinesis stream the games write telemetry events to.
    #[arg(long, env = "TELEMETRY_STREAM", default_value = "telemetry", value_parser = parse_resource_name)]
    pub telemetry_stream: String,

    /// Kinesis stream that receives one pointer per batch written to S3.
    #[arg(long, env = "FILES_STREAM", default_value = "files", value_parser = parse_resource_name)]
    pub files_stream: String,

    /// S3 bucket of the data lake (batches under `events/`, rejects under `errors/`).
    #[arg(long, env = "BUCKET", value_parser = parse_resource_name)]
    pub bucket: String,

    /// DynamoDB lease table of this connector's shard leases (created if missing).
    #[arg(long = "s3-connector-lease-table", env = "S3_CONNECTOR_LEASE_TABLE", default_value = "s3-connector", value_parser = parse_resource_name)]
    pub lease_table: String,

    #[command(flatten)]
    pub service: ServiceArgs,

    #[command(flatten)]
    pub aws: AwsArgs,
}

/// Why the connector stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    MissingResources(#[from] MissingResources),
}

/// Runs the connector until `context.shutdown` is cancelled.
pub async fn run(config: Config, context: ServiceContext) -> Result<(), Error> {
    resources::require(
        &context.aws,
        &[
            Resource::Stream {
                name: config.telemetry_stream.clone(),
            },
            Resource::Stream {
                name: config.files_stream.clone(),
            },
            Resource::Bucket {
                name: config.bucket.clone(),
            },
        ],
    )
    .await?;
    context.health.set_ready(true);
    tracing::info!(
        telemetry_stream = %config.telemetry_stream,
        files_stream = %config.files_stream,
        bucket = %config.bucket,
        "resources found; idle until shutdown"
    );
    context.shutdown.cancelled().await;
    Ok(())
}
