//! s3-connector: reads the `telemetry` stream, validates and normalizes each event,
//! writes valid events in gzipped JSON-lines batches to `events/…` in S3 (rejects to
//! `errors/…` with their reasons and raw bytes), publishes one pointer per events file
//! on the `files` stream, and only then checkpoints.
//!
//! Source → transform → sink: the telemetry stream, read by `shard-consumer`; [`batch`],
//! the pure part (what goes in which file, when to flush); [`writer`], the output of
//! the shard's buffered processor (retries, metrics), through [`sink`], every AWS call
//! it makes.

pub mod batch;
pub mod config;
pub mod sink;
pub mod writer;

use std::sync::Arc;

use pipeline_runtime::ServiceContext;
use pipeline_runtime::resources;
use pipeline_runtime::schemas::SchemaLoadError;
use shard_consumer::kinesis::KinesisSource;
use shard_consumer::{BufferedFactory, MemoryBudget, StreamServiceError, run_consumer};

use batch::ShardBatches;
pub use config::Config;
use sink::Sink;
use writer::Writer;

pub const SERVICE: &str = "s3-connector";

/// The IAM actions of every AWS call this service makes, by the module that makes
/// it; `infra/roles.json` grants their union (checked by `tests/tests/iam.rs`).
pub const AWS_ACTIONS: &[&[&str]] = &[
    sink::IAM_ACTIONS,
    shard_consumer::kinesis::IAM_ACTIONS,
    shard_consumer::lease_table::IAM_ACTIONS,
    pipeline_runtime::resources::IAM_ACTIONS,
    pipeline_runtime::schemas::IAM_ACTIONS,
];
/// The lease application name (the `Application` dimension of consumer metrics).
pub const APPLICATION: &str = "s3-connector";

/// Why the connector stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Service(#[from] StreamServiceError),
    #[error(transparent)]
    Schemas(#[from] SchemaLoadError),
}

/// Runs the connector until `context.shutdown` is cancelled.
pub async fn run(config: Config, context: ServiceContext) -> Result<(), Error> {
    resources::require(&context.aws, &config.resources())
        .await
        .map_err(StreamServiceError::from)?;
    let schemas = config.schemas.load(&context.aws.s3()).await?;
    let source = KinesisSource::new(context.aws.kinesis(), &config.telemetry_stream);
    let batching = Arc::new(config.batching(Arc::new(schemas)));
    let writer = Writer {
        sink: Sink::new(
            &context.aws,
            &config.bucket,
            config.sse_kms_key_id.as_deref(),
            &config.files_stream,
        ),
        metrics: context.metrics.clone(),
    };
    let factory = BufferedFactory::for_service(&context, writer, move |shard: &str| {
        ShardBatches::new(shard, batching.clone())
    })
    .with_memory(MemoryBudget::new(config.memory_cap_bytes()));
    tracing::info!(
        telemetry_stream = %config.telemetry_stream,
        files_stream = %config.files_stream,
        bucket = %config.bucket,
        "consuming"
    );
    let consumer = config.runtime.consumer.config(APPLICATION);
    run_consumer(&context, consumer, source, &config.lease_table, factory)
        .await
        .map_err(StreamServiceError::from)?;
    Ok(())
}
