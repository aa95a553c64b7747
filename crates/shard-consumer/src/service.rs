//! A consumer as a service runs it: the source, a lease table and a processor factory,
//! with the service's AWS clients, metrics and stop token.
//!
//! A service whose whole work is one consumer calls [`run_consumer`]. One that runs
//! several (player-state-worker: a Kinesis source and a DynamoDB Streams source, each
//! with its own lease table, stopped together by a child of the shutdown token when
//! either fails) builds each with [`consumer`] and runs it with its own token:
//!
//! ```ignore
//! let stop = context.shutdown.child_token();
//! let events = shard_consumer::service::consumer(&context, config.consumer.config("events"),
//!     KinesisSource::new(context.aws.kinesis(), &stream), &events_leases, events_factory);
//! let levels = shard_consumer::service::consumer(&context, config.consumer.config("levels"),
//!     DynamoDbStreamsSource::new(context.aws.dynamodb_streams(), &arn), &level_leases, levels_factory);
//! context.health.set_ready(true);
//! tokio::try_join!(events.run(stop.clone()), levels.run(stop.clone()))?;
//! ```

use pipeline_runtime::resources::MissingResources;
use pipeline_runtime::{AwsArgs, ServiceArgs, ServiceContext};

use crate::args::ConsumerArgs;
use crate::config::ConsumerConfig;
use crate::consumer::{Consumer, ConsumerError};
use crate::lease_table::LeaseTable;
use crate::processor::ProcessorFactory;
use crate::source::Source;

/// The settings every service that consumes a stream has: the consumer's, the
/// service's own (health port, shutdown deadline, logs) and AWS's. A service's settings
/// flatten them after its own.
#[derive(Debug, Clone, clap::Args)]
pub struct StreamServiceArgs {
    #[command(flatten)]
    pub consumer: ConsumerArgs,

    #[command(flatten)]
    pub service: ServiceArgs,

    #[command(flatten)]
    pub aws: AwsArgs,
}

/// Why a service that consumes streams stopped, whatever else it does: a resource it
/// needs is missing at start, or a consumer failed in a way no retry fixes.
#[derive(Debug, thiserror::Error)]
pub enum StreamServiceError {
    #[error(transparent)]
    MissingResources(#[from] MissingResources),
    #[error(transparent)]
    Consumer(#[from] ConsumerError),
}

/// A consumer of `source` whose leases are in the DynamoDB table `lease_table`, with
/// the service's metrics. Run it with the token that should stop it.
pub fn consumer<S, F>(
    context: &ServiceContext,
    config: ConsumerConfig,
    source: S,
    lease_table: &str,
    factory: F,
) -> Consumer<S, F>
where
    S: Source,
    F: ProcessorFactory<S::Record>,
{
    Consumer::new(
        source,
        LeaseTable::new(context.aws.dynamodb(), lease_table),
        factory,
        config,
        context.metrics.clone(),
    )
}

/// Runs one [`consumer`] as the service's whole work: the service is ready from here,
/// and the consumer runs until the service's shutdown (then flushes, checkpoints and
/// releases its leases) or a failure no retry fixes.
pub async fn run_consumer<S, F>(
    context: &ServiceContext,
    config: ConsumerConfig,
    source: S,
    lease_table: &str,
    factory: F,
) -> Result<(), ConsumerError>
where
    S: Source,
    F: ProcessorFactory<S::Record>,
{
    let consumer = consumer(context, config, source, lease_table, factory);
    context.health.set_ready(true);
    consumer.run(context.shutdown.clone()).await
}
