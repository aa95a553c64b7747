//! redshift-connector: reads batch pointers from the `files` stream and loads the
//! batches into the warehouse exactly once (manifest, COPY into staging, dedupe,
//! insert, record the files, all in one transaction), then checkpoints. A file the
//! warehouse keeps refusing goes to `dead-letters/` after a retry window.
//!
//! Source → transform → sink: the `files` stream, read by `shard-consumer`; [`pending`],
//! the pure part (the load being gathered, its failing files); [`loader`], the output
//! of the shard's buffered processor (loads, retries, dead letters), through [`sink`],
//! every call it makes to S3 and the warehouse.

pub mod config;
pub mod loader;
pub mod pending;
pub mod sink;

use std::sync::Arc;

use pipeline_runtime::ServiceContext;
use pipeline_runtime::resources;
use pipeline_runtime::retry::{RetryPolicy, retry};
use shard_consumer::kinesis::KinesisSource;
use shard_consumer::{BufferedFactory, StreamServiceError, run_consumer};
use warehouse::config::WarehouseConfigError;

pub use config::Config;
use loader::Loader;
use pending::PendingLoad;
use sink::Sink;

pub const SERVICE: &str = "redshift-connector";

/// The IAM actions of every AWS call this service makes, by the module that makes
/// it; `infra/roles.json` grants their union (checked by `tests/tests/iam.rs`).
pub const AWS_ACTIONS: &[&[&str]] = &[
    sink::IAM_ACTIONS,
    warehouse::redshift_data::IAM_ACTIONS,
    shard_consumer::kinesis::IAM_ACTIONS,
    shard_consumer::lease_table::IAM_ACTIONS,
    pipeline_runtime::resources::IAM_ACTIONS,
];
/// The lease application name.
pub const APPLICATION: &str = "redshift-connector";

/// Why the connector stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Service(#[from] StreamServiceError),
    #[error(transparent)]
    Config(#[from] WarehouseConfigError),
    #[error("LOAD_MAX_FILES: {0}")]
    LoadTooLarge(String),
    #[error(transparent)]
    Warehouse(#[from] warehouse::WarehouseError),
}

/// Runs the connector until `context.shutdown` is cancelled.
pub async fn run(config: Config, context: ServiceContext) -> Result<(), Error> {
    resources::require(&context.aws, &config.resources())
        .await
        .map_err(StreamServiceError::from)?;
    warehouse::check_max_files(config.max_files(), false).map_err(Error::LoadTooLarge)?;
    let Some(sink) = connect(&config, &context).await? else {
        return Ok(());
    };
    let source = KinesisSource::new(context.aws.kinesis(), &config.files_stream);
    let loading = Arc::new(config.loading());
    let loader = Loader {
        sink,
        dead_letter_after: config.dead_letter_after(),
        metrics: context.metrics.clone(),
    };
    let factory = BufferedFactory::for_service(&context, loader, move |_shard: &str| PendingLoad::new(loading.clone()));
    tracing::info!(files_stream = %config.files_stream, bucket = %config.bucket, "loading");
    let consumer = config.runtime.consumer.config(APPLICATION);
    run_consumer(&context, consumer, source, &config.lease_table, factory)
        .await
        .map_err(StreamServiceError::from)?;
    Ok(())
}

/// The sink, once the warehouse answers with this build's schema; `None` when the
/// service was stopped first.
async fn connect(config: &Config, context: &ServiceContext) -> Result<Option<Sink>, Error> {
    let warehouse = config
        .warehouse
        .open(context.aws.s3(), || context.aws.redshift_data())?;
    let sink = Sink::new(
        &context.aws,
        &config.bucket,
        config.sse_kms_key_id.as_deref(),
        warehouse,
    );
    // A warehouse still starting (Serverless resuming) must not fail a deployment. The
    // schema is `pipelinectl setup`'s: this user may only load.
    let version = match retry(&RetryPolicy::START, &context.shutdown, || sink.check_schema()).await {
        Ok(version) => version,
        Err(error) if error.is_stopped() => return Ok(None),
        Err(error) => return Err(error.into_error().into()),
    };
    tracing::info!(schema_version = version, dialect = ?sink.dialect(), "warehouse schema is current");
    Ok(Some(sink))
}
