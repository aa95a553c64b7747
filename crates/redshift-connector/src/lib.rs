//! redshift-connector: reads batch pointers from the `files` stream and loads the
//! batches into the warehouse exactly once (manifest, COPY into staging, dedupe,
//! insert, record the files, all in one transaction), then checkpoints.

pub mod processor;

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use pipeline_runtime::config::parse_resource_name;
use pipeline_runtime::resources::{self, MissingResources, Resource};
use pipeline_runtime::{AwsArgs, ServiceArgs, ServiceContext};
use shard_consumer::kinesis::KinesisSource;
use shard_consumer::{ConsumerArgs, ConsumerError, LeaseTable};
use warehouse::WarehouseArgs;
use warehouse::config::WarehouseConfigError;

use processor::{LoadLimits, LoaderFactory, Shared};

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

    /// Load when this many files are pending.
    #[arg(long, env = "LOAD_MAX_FILES", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub load_max_files: u64,

    /// Load when the pending files hold this many MiB (compressed).
    #[arg(long, env = "LOAD_MAX_MIB", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    pub load_max_mib: u64,

    /// Load this many seconds after the first pending pointer arrived, even if little is pending.
    #[arg(long, env = "LOAD_MAX_AGE_SECS", default_value_t = 120,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub load_max_age_secs: u64,

    #[command(flatten)]
    pub warehouse: WarehouseArgs,

    #[command(flatten)]
    pub consumer: ConsumerArgs,

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
    #[error(transparent)]
    Config(#[from] WarehouseConfigError),
    #[error(transparent)]
    Warehouse(#[from] warehouse::WarehouseError),
    #[error(transparent)]
    Consumer(#[from] ConsumerError),
}

/// The lease application name.
pub const APPLICATION: &str = "redshift-connector";

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
    let warehouse = config
        .warehouse
        .open(context.aws.s3(), || context.aws.redshift_data())?;
    let version = warehouse.migrate().await?;
    tracing::info!(schema_version = version, dialect = ?warehouse.dialect(), "warehouse schema is current");
    let shared = Arc::new(Shared {
        warehouse,
        s3: context.aws.s3(),
        bucket: config.bucket.clone(),
        limits: LoadLimits {
            max_files: usize::try_from(config.load_max_files).unwrap_or(100),
            max_bytes: config.load_max_mib * 1024 * 1024,
            max_age: Duration::from_secs(config.load_max_age_secs),
        },
        metrics: context.metrics.clone(),
        shutdown: context.shutdown.clone(),
    });
    let consumer = shard_consumer::Consumer::new(
        KinesisSource::new(context.aws.kinesis(), &config.files_stream),
        LeaseTable::new(context.aws.dynamodb(), &config.lease_table),
        LoaderFactory(shared),
        config.consumer.config(APPLICATION),
        context.metrics.clone(),
    );
    context.health.set_ready(true);
    tracing::info!(files_stream = %config.files_stream, bucket = %config.bucket, "loading");
    consumer.run(context.shutdown.clone()).await?;
    Ok(())
}
