//! redshift-connector: reads batch pointers from the `files` stream and loads the
//! batches into the warehouse exactly once (manifest, COPY into staging, dedupe,
//! insert, record the files, all in one transaction), then checkpoints. A file the
//! warehouse keeps refusing goes to `dead-letters/` after a retry window.
//!
//! [`pending`] is the pure part (the load being gathered, its failing files);
//! [`processor`] does the loading, the retries and the dead letters.

pub mod pending;
pub mod processor;

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use pipeline_runtime::config::parse_resource_name;
use pipeline_runtime::resources::{self, MissingResources, Resource};
use pipeline_runtime::retry::{RetryPolicy, retry};
use pipeline_runtime::s3::Lake;
use pipeline_runtime::{AwsArgs, ServiceArgs, ServiceContext};
use shard_consumer::kinesis::KinesisSource;
use shard_consumer::{ConsumerArgs, ConsumerError, LeaseTable};
use warehouse::WarehouseArgs;
use warehouse::config::WarehouseConfigError;

use pending::LoadLimits;
use processor::{LoaderFactory, Shared};

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

    /// Seconds a batch file the warehouse keeps refusing (missing, not gzip, a line it
    /// cannot load) is retried before its pointer goes to `dead-letters/` in the bucket
    /// and the rest of the load goes on (0: at the first refusal). `pipelinectl
    /// dead-letters redrive` loads them once the cause is fixed.
    #[arg(long, env = "DEAD_LETTER_AFTER_SECS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(0..=604_800))]
    pub dead_letter_after_secs: u64,

    /// KMS key (id or ARN) for SSE-KMS on the manifests and dead letters written; unset = the bucket's default encryption.
    #[arg(long, env = "SSE_KMS_KEY_ID")]
    pub sse_kms_key_id: Option<String>,

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
    #[error("LOAD_MAX_FILES: {0}")]
    LoadTooLarge(String),
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
    let max_files = usize::try_from(config.load_max_files).unwrap_or(usize::MAX);
    warehouse::check_max_files(max_files).map_err(Error::LoadTooLarge)?;
    let warehouse = config
        .warehouse
        .open(context.aws.s3(), || context.aws.redshift_data())?;
    // A warehouse still starting (Serverless resuming) must not fail a deployment. The
    // schema is `pipelinectl setup`'s: this user may only load.
    let version = match retry(&RetryPolicy::START, &context.shutdown, || warehouse.check_schema()).await {
        Ok(version) => version,
        Err(error) if error.is_stopped() => return Ok(()),
        Err(error) => return Err(error.into_error().into()),
    };
    tracing::info!(schema_version = version, dialect = ?warehouse.dialect(), "warehouse schema is current");
    let shared = Arc::new(Shared {
        warehouse,
        lake: Lake {
            s3: context.aws.s3(),
            bucket: config.bucket.clone(),
            sse_kms_key_id: config.sse_kms_key_id.clone(),
        },
        limits: LoadLimits {
            max_files,
            max_bytes: config.load_max_mib * 1024 * 1024,
            max_age: Duration::from_secs(config.load_max_age_secs),
        },
        dead_letter_after: Duration::from_secs(config.dead_letter_after_secs),
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
