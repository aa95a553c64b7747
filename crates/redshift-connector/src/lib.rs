//! redshift-connector: reads batch pointers from the `files` stream and loads the
//! batches into the warehouse exactly once (manifest, COPY into staging, dedupe,
//! insert, record the files, all in one transaction), then checkpoints.
//!
//! Today the service checks its resources, reports health and stops cleanly; the
//! loading arrives with the warehouse library.

use clap::Parser;
use pipeline_runtime::config::parse_resource_name;
use pipeline_runtime::resources::{self, MissingResources, Resource};
use pipeline_runtime::{AwsArgs, ServiceArgs, ServiceContext};

pub const SERVICE: &str = "redshift-connector";

/// Settings of the redshift-connector.
#[derive(Debug, Clone, Parser)]
#[command(name = SERVICE, version, about = "Batch pointers on the files stream → exactly-once loads into Redshift")]
pub struct Config {
    /// Kinesis stream carrying one pointer per batch file.
    #[arg(long, env = "FILES_STREAM", default_value = "files", value_parser = parse_resource_name)]
    pub files_stream: String,

    /// S3 bucket holding the batches (and the manifests this connector writes).
    #[arg(long, env = "BUCKET", value_parser = parse_resource_name)]
    pub bucket: String,

    /// DynamoDB lease table of this connector's shard leases (created if missing).
    #[arg(long = "redshift-connector-lease-table", env = "REDSHIFT_CONNECTOR_LEASE_TABLE", default_value = "redshift-connector", value_parser = parse_resource_name)]
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
                name: config.files_stream.clone(),
            },
            Resource::Bucket {
                name: config.bucket.clone(),
            },
        ],
    )
    .await?;
    context.health.set_ready(true);
    tracing::info!(files_stream = %config.files_stream, bucket = %config.bucket, "resources found; idle until shutdown");
    context.shutdown.cancelled().await;
    Ok(())
}
