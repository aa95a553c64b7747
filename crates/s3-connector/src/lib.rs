//! s3-connector: reads the `telemetry` stream, validates and normalizes each event,
//! writes valid events in gzipped JSON-lines batches to `events/…` in S3 (rejects to
//! `errors/…` with their reasons and raw bytes), publishes one pointer per events file
//! on the `files` stream, and only then checkpoints.
//!
//! [`batch`] is the pure part (what goes in which file, when to flush); [`processor`]
//! does the writing, the retries and the memory bound.

pub mod batch;
pub mod config;
pub mod processor;

use std::sync::Arc;

use pipeline_runtime::ServiceContext;
use pipeline_runtime::resources::{self, MissingResources, Resource};
use pipeline_runtime::s3::Lake;
use shard_consumer::kinesis::KinesisSource;
use shard_consumer::{Consumer, ConsumerError, LeaseTable};
use tokio::sync::Semaphore;

pub use config::Config;
use processor::{S3ProcessorFactory, Shared};

pub const SERVICE: &str = "s3-connector";
/// The lease application name (the `Application` dimension of consumer metrics).
pub const APPLICATION: &str = "s3-connector";

/// Why the connector stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    MissingResources(#[from] MissingResources),
    #[error(transparent)]
    Consumer(#[from] ConsumerError),
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
    let memory_cap = config.memory_cap_bytes();
    let shared = Arc::new(Shared {
        lake: Lake {
            s3: context.aws.s3(),
            bucket: config.bucket.clone(),
            sse_kms_key_id: config.sse_kms_key_id.clone(),
        },
        kinesis: context.aws.kinesis(),
        files_stream: config.files_stream.clone(),
        rules: config.rules(),
        limits: config.limits(),
        gzip_level: config.gzip_level,
        memory: Arc::new(Semaphore::new(memory_cap)),
        memory_cap,
        metrics: context.metrics.clone(),
        shutdown: context.shutdown.clone(),
    });
    let consumer = Consumer::new(
        KinesisSource::new(context.aws.kinesis(), &config.telemetry_stream),
        LeaseTable::new(context.aws.dynamodb(), &config.lease_table),
        S3ProcessorFactory { shared },
        config.consumer.config(APPLICATION),
        context.metrics.clone(),
    );
    context.health.set_ready(true);
    tracing::info!(
        telemetry_stream = %config.telemetry_stream,
        files_stream = %config.files_stream,
        bucket = %config.bucket,
        "consuming"
    );
    consumer.run(context.shutdown.clone()).await?;
    Ok(())
}
