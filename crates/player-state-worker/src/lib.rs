//! player-state-worker: live game state in DynamoDB, in three stages that can run in
//! one process or be scaled apart (`STAGES`):
//!
//! - events ([`events_stage`]): telemetry → one conditional update per player per batch in PlayerState;
//! - levels ([`level_stage`]): PlayerState's stream → exactly-once LevelState and Transitions counts;
//! - pruner ([`pruner`]): deletes idle players, one instance at a time.
//!
//! [`events`] and [`levels`] are the pure parts; [`routes`] serves the counts back
//! (`GET /levels`, `GET /transitions?since=` on the health port) through the
//! `live-state` crate, which describes the tables and which `pipelinectl` reads too;
//! [`quarantine`] stores in `errors/` the records a stage can never apply; [`sink`]
//! holds every AWS call the stages make, one function per call.
//!
//! The stages live and die together: when one fails for good, the others stop, the
//! worker reports not ready and exits non-zero, so the orchestrator restarts it.

pub mod config;
pub mod events;
pub mod events_stage;
pub mod level_stage;
pub mod levels;
pub mod pruner;
pub mod quarantine;
pub mod routes;
pub mod sink;

use std::sync::Arc;

use event_model::EventSchemas;
use pipeline_runtime::ServiceContext;
use pipeline_runtime::resources;
use pipeline_runtime::retry::{RetryPolicy, retry};
use pipeline_runtime::schemas::SchemaLoadError;
use shard_consumer::dynamodb_streams::DynamoDbStreamSource;
use shard_consumer::kinesis::KinesisSource;
use shard_consumer::service::consumer;
use shard_consumer::{PerBatchFactory, StreamServiceError};
use tokio_util::sync::CancellationToken;

pub use config::{Config, Stage};

pub const SERVICE: &str = "player-state-worker";

/// The IAM actions of every AWS call this service makes, by the module that makes
/// it; `infra/roles.json` grants their union (checked by `tests/tests/iam.rs`).
pub const AWS_ACTIONS: &[&[&str]] = &[
    sink::player_state::IAM_ACTIONS,
    sink::level_counts::IAM_ACTIONS,
    sink::quarantine::IAM_ACTIONS,
    live_state::IAM_ACTIONS,
    shard_consumer::kinesis::IAM_ACTIONS,
    shard_consumer::dynamodb_streams::IAM_ACTIONS,
    shard_consumer::lease_table::IAM_ACTIONS,
    pipeline_runtime::resources::IAM_ACTIONS,
    pipeline_runtime::schemas::IAM_ACTIONS,
];

/// Why the worker stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Service(#[from] StreamServiceError),
    #[error("the PlayerState stream: {0}")]
    Stream(#[from] shard_consumer::error::AwsError),
    #[error("pruner: {0}")]
    Pruner(#[from] pruner::PrunerError),
    #[error(transparent)]
    Schemas(#[from] SchemaLoadError),
}

/// Runs the worker until `context.shutdown` is cancelled, or until a stage fails for
/// good (then the other stages stop too, and the error is returned).
pub async fn run(config: Config, context: ServiceContext) -> Result<(), Error> {
    resources::require(&context.aws, &config.resources())
        .await
        .map_err(StreamServiceError::from)?;
    // Only the events stage reads telemetry; a bad schema stops the start, before ready.
    let schemas = if config.runs(Stage::Events) {
        Arc::new(config.schemas.load(&context.aws.s3()).await?)
    } else {
        Arc::default()
    };
    // One token for the stages: the service's shutdown, or a stage that failed for good.
    let stop = context.shutdown.child_token();
    context.health.set_ready(true);
    tracing::info!(
        stages = ?config.stages,
        telemetry_stream = %config.telemetry_stream,
        player_state_table = %config.tables.player_state_table,
        "running"
    );
    let (events, levels, pruner) = tokio::join!(
        supervised(
            "events",
            config.runs(Stage::Events),
            &context,
            &stop,
            run_events(&config, &context, &stop, schemas)
        ),
        supervised(
            "levels",
            config.runs(Stage::Levels),
            &context,
            &stop,
            run_levels(&config, &context, &stop)
        ),
        supervised(
            "pruner",
            config.runs(Stage::Pruner),
            &context,
            &stop,
            run_pruner(&config, &context, &stop)
        ),
    );
    events.and(levels).and(pruner)
}

/// Runs `work` if its stage is switched `on`. Whichever stage fails first stops the
/// others; each still flushes and releases its leases on the way out.
async fn supervised(
    name: &'static str,
    on: bool,
    context: &ServiceContext,
    stop: &CancellationToken,
    work: impl Future<Output = Result<(), Error>>,
) -> Result<(), Error> {
    if !on {
        return Ok(());
    }
    let result = work.await;
    if let Err(error) = &result {
        tracing::error!(stage = name, %error, "stage failed; stopping the worker");
        context.health.set_ready(false);
        stop.cancel();
    }
    result
}

/// The events stage: telemetry → PlayerState.
async fn run_events(
    config: &Config,
    context: &ServiceContext,
    stop: &CancellationToken,
    schemas: Arc<EventSchemas>,
) -> Result<(), Error> {
    let source = KinesisSource::new(context.aws.kinesis(), &config.telemetry_stream);
    let factory = PerBatchFactory::new(config.events_stage(context, schemas));
    let settings = config.runtime.consumer.config(events_stage::APPLICATION);
    let lease_table = &config.lease_tables.player_state_lease_table;
    consumer(context, settings, source, lease_table, factory)
        .run(stop.clone())
        .await
        .map_err(StreamServiceError::from)?;
    Ok(())
}

/// The level stage: PlayerState's stream → LevelState and Transitions, once the
/// table's stream is found.
async fn run_levels(config: &Config, context: &ServiceContext, stop: &CancellationToken) -> Result<(), Error> {
    let dynamodb = context.aws.dynamodb();
    let found = retry(&RetryPolicy::START, stop, || {
        DynamoDbStreamSource::for_table(
            &dynamodb,
            context.aws.dynamodb_streams(),
            &config.tables.player_state_table,
        )
    })
    .await;
    let source = match found {
        Ok(source) => source,
        Err(error) if error.is_stopped() => return Ok(()),
        Err(error) => return Err(error.into_error().into()),
    };
    let factory = PerBatchFactory::new(config.level_stage(context));
    let settings = config.runtime.consumer.config(level_stage::APPLICATION);
    let lease_table = &config.lease_tables.level_state_lease_table;
    consumer(context, settings, source, lease_table, factory)
        .run(stop.clone())
        .await
        .map_err(StreamServiceError::from)?;
    Ok(())
}

/// The idle-player pruner.
async fn run_pruner(config: &Config, context: &ServiceContext, stop: &CancellationToken) -> Result<(), Error> {
    config.pruner(context).run(stop.clone()).await?;
    Ok(())
}
