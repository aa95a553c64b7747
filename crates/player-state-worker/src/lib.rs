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

pub mod events;
pub mod events_stage;
pub mod level_stage;
pub mod levels;
pub mod pruner;
pub mod quarantine;
pub mod routes;
pub mod sink;

use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use event_model::Rules;
use live_state::{level_state, player_state, transitions};
use pipeline_runtime::config::parse_resource_name;
use pipeline_runtime::resources::{self, MissingResources, Resource};
use pipeline_runtime::retry::{RetryPolicy, retry};
use pipeline_runtime::s3::Lake;
use pipeline_runtime::{AwsArgs, ServiceArgs, ServiceContext};
use shard_consumer::dynamodb_streams::DynamoDbStreamSource;
use shard_consumer::kinesis::KinesisSource;
use shard_consumer::singleton::SingletonLease;
use shard_consumer::{ConsumerArgs, ConsumerError, LeaseTable};

use quarantine::Quarantine;

pub const SERVICE: &str = "player-state-worker";

/// A part of the worker that can be switched on or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Stage {
    /// telemetry → PlayerState
    Events,
    /// PlayerState stream → LevelState and Transitions
    Levels,
    /// deletes idle players
    Pruner,
}
/// Settings of the player-state-worker.
#[derive(Debug, Clone, Parser)]
#[command(name = SERVICE, version, about = "Telemetry → PlayerState → exactly-once LevelState and Transitions in DynamoDB")]
pub struct Config {
    /// Kinesis stream the games write telemetry events to.
    #[arg(long, env = "TELEMETRY_STREAM", default_value = "telemetry", value_parser = parse_resource_name)]
    pub telemetry_stream: String,

    /// S3 bucket of the data lake: records a stage can never apply go to its `errors/`.
    #[arg(long, env = "BUCKET", value_parser = parse_resource_name)]
    pub bucket: String,

    /// KMS key (id or ARN) for SSE-KMS on the objects written; unset = the bucket's default encryption.
    #[arg(long, env = "SSE_KMS_KEY_ID")]
    pub sse_kms_key_id: Option<String>,

    /// DynamoDB table with each present player's level (must have a NEW_AND_OLD_IMAGES stream).
    #[arg(long, env = "PLAYER_STATE_TABLE", default_value = "PlayerState", value_parser = parse_resource_name)]
    pub player_state_table: String,

    /// DynamoDB table with the player count of each level.
    #[arg(long, env = "LEVEL_STATE_TABLE", default_value = "LevelState", value_parser = parse_resource_name)]
    pub level_state_table: String,

    /// DynamoDB table with level-to-level transition counts per time bucket.
    #[arg(long, env = "TRANSITIONS_TABLE", default_value = "Transitions", value_parser = parse_resource_name)]
    pub transitions_table: String,

    /// Lease table of the events stage (telemetry shards); created if missing.
    #[arg(long, env = "PLAYER_STATE_LEASE_TABLE", default_value = "player-state", value_parser = parse_resource_name)]
    pub player_state_lease_table: String,

    /// Lease table of the level stage (PlayerState stream shards); created if missing.
    #[arg(long, env = "LEVEL_STATE_LEASE_TABLE", default_value = "level-state", value_parser = parse_resource_name)]
    pub level_state_lease_table: String,

    /// Lease table of the idle-player pruner's singleton lease; created if missing.
    #[arg(long, env = "PRUNER_LEASE_TABLE", default_value = "player-state-pruner", value_parser = parse_resource_name)]
    pub pruner_lease_table: String,

    /// Stages this process runs, comma-separated: `events`, `levels`, `pruner`.
    #[arg(
        long,
        env = "STAGES",
        value_enum,
        value_delimiter = ',',
        default_value = "events,levels,pruner"
    )]
    pub stages: Vec<Stage>,

    /// What the telemetry records are: `auto` (JSON if a record starts with `{`, else
    /// Snowplow TSV), `json` (the pipeline's event) or `snowplow` (enriched TSV).
    #[arg(long, env = "INPUT_FORMAT", value_enum, default_value = "auto")]
    pub input_format: events::InputFormat,

    /// Iglu schema of the Snowplow context that carries `user_id` and `level_slug`.
    #[arg(long, env = "SNOWPLOW_LEVEL_CONTEXT", default_value = "iglu:com.codecombat/level_context/jsonschema/1-0-0",
          value_parser = parse_level_context)]
    pub snowplow_level_context: events::SnowplowLevelContext,

    /// Seconds without an event after which a player counts as gone (pruned, and older
    /// events are ignored).
    #[arg(long, env = "IDLE_TIMEOUT_SECS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub idle_timeout_secs: u64,

    /// Seconds between two pruning passes.
    #[arg(long, env = "PRUNE_INTERVAL_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub prune_interval_secs: u64,

    /// Parallel scan segments of a pruning pass.
    #[arg(long, env = "PRUNE_SEGMENTS", default_value_t = 4,
          value_parser = clap::value_parser!(i32).range(1..=64))]
    pub prune_segments: i32,

    /// PlayerState writes in flight at once per shard.
    #[arg(long, env = "WRITE_CONCURRENCY", default_value_t = 16,
          value_parser = clap::value_parser!(u64).range(1..=256))]
    pub write_concurrency: u64,

    /// Seconds per transition-count bucket.
    #[arg(long, env = "TRANSITION_BUCKET_SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub transition_bucket_secs: u64,

    /// Seconds a transition count is kept (DynamoDB TTL on `expiresAt`).
    #[arg(long, env = "TRANSITION_TTL_SECS", default_value_t = 604_800,
          value_parser = clap::value_parser!(u64).range(3600..=31_536_000))]
    pub transition_ttl_secs: u64,

    /// Seconds an event's timestamp may be ahead of its arrival before it is rejected.
    #[arg(long, env = "FUTURE_WINDOW_SECS", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(0..=604_800))]
    pub future_window_secs: u64,

    #[command(flatten)]
    pub consumer: ConsumerArgs,

    #[command(flatten)]
    pub service: ServiceArgs,

    #[command(flatten)]
    pub aws: AwsArgs,
}

fn parse_level_context(value: &str) -> Result<events::SnowplowLevelContext, String> {
    events::SnowplowLevelContext::from_schema(value)
        .ok_or_else(|| "expected an Iglu URI: iglu:<vendor>/<name>/jsonschema/<major>-<minor>-<patch>".into())
}

/// Why the worker stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    MissingResources(#[from] MissingResources),
    #[error(transparent)]
    Consumer(#[from] ConsumerError),
    #[error("the PlayerState stream: {0}")]
    Stream(#[from] shard_consumer::error::AwsError),
    #[error("pruner: {0}")]
    Pruner(#[from] pruner::PrunerError),
}

/// Runs the worker until `context.shutdown` is cancelled, or until a stage fails for
/// good (then the other stages stop too, and the error is returned).
pub async fn run(config: Config, context: ServiceContext) -> Result<(), Error> {
    resources::require(
        &context.aws,
        &[
            Resource::Stream {
                name: config.telemetry_stream.clone(),
            },
            Resource::Bucket {
                name: config.bucket.clone(),
            },
            Resource::Table(player_state::spec(&config.player_state_table)),
            Resource::Table(level_state::spec(&config.level_state_table)),
            Resource::Table(transitions::spec(&config.transitions_table)),
        ],
    )
    .await?;
    let idle_timeout = Duration::from_secs(config.idle_timeout_secs);
    let aws = &context.aws;
    // One token for the stages: the service's shutdown, or a stage that failed for good.
    let stages_stop = context.shutdown.child_token();
    let quarantine = |application: &'static str| Quarantine {
        lake: Lake {
            s3: aws.s3(),
            bucket: config.bucket.clone(),
            sse_kms_key_id: config.sse_kms_key_id.clone(),
        },
        application,
        metrics: context.metrics.clone(),
    };
    let events = async {
        if !config.stages.contains(&Stage::Events) {
            return Ok::<(), Error>(());
        }
        let stage = events_stage::EventsStage {
            dynamodb: aws.dynamodb(),
            table: config.player_state_table.clone(),
            rules: Rules {
                future_window_ms: i64::try_from(config.future_window_secs * 1000).unwrap_or(i64::MAX),
                ..Rules::default()
            },
            format: config.input_format,
            level_context: config.snowplow_level_context.clone(),
            idle_timeout,
            concurrency: usize::try_from(config.write_concurrency).unwrap_or(16),
            quarantine: quarantine(events_stage::APPLICATION),
            metrics: context.metrics.clone(),
        };
        shard_consumer::Consumer::new(
            KinesisSource::new(aws.kinesis(), &config.telemetry_stream),
            LeaseTable::new(aws.dynamodb(), &config.player_state_lease_table),
            events_stage::EventsProcessorFactory(Arc::new(stage)),
            config.consumer.config(events_stage::APPLICATION),
            context.metrics.clone(),
        )
        .run(stages_stop.clone())
        .await?;
        Ok(())
    };
    let levels = async {
        if !config.stages.contains(&Stage::Levels) {
            return Ok::<(), Error>(());
        }
        let stage = level_stage::LevelStage {
            dynamodb: aws.dynamodb(),
            level_table: config.level_state_table.clone(),
            transitions_table: config.transitions_table.clone(),
            bucket: Duration::from_secs(config.transition_bucket_secs),
            transition_ttl: Duration::from_secs(config.transition_ttl_secs),
            quarantine: quarantine(level_stage::APPLICATION),
            metrics: context.metrics.clone(),
        };
        let dynamodb = aws.dynamodb();
        let found = retry(&RetryPolicy::START, &stages_stop, || {
            DynamoDbStreamSource::for_table(&dynamodb, aws.dynamodb_streams(), &config.player_state_table)
        })
        .await;
        let source = match found {
            Ok(source) => source,
            Err(error) if error.is_stopped() => return Ok(()),
            Err(error) => return Err(error.into_error().into()),
        };
        shard_consumer::Consumer::new(
            source,
            LeaseTable::new(aws.dynamodb(), &config.level_state_lease_table),
            level_stage::LevelProcessorFactory(Arc::new(stage)),
            config.consumer.config(level_stage::APPLICATION),
            context.metrics.clone(),
        )
        .run(stages_stop.clone())
        .await?;
        Ok(())
    };
    let pruner = async {
        if !config.stages.contains(&Stage::Pruner) {
            return Ok::<(), Error>(());
        }
        let consumer = config.consumer.config("player-state-pruner");
        let pruner = pruner::Pruner {
            dynamodb: aws.dynamodb(),
            table: config.player_state_table.clone(),
            level_state_table: config.level_state_table.clone(),
            idle_timeout,
            interval: Duration::from_secs(config.prune_interval_secs),
            segments: config.prune_segments,
            lease: SingletonLease::new(
                LeaseTable::new(aws.dynamodb(), &config.pruner_lease_table),
                "pruner",
                &consumer.worker_id,
                consumer.failover,
            )
            .creating_table(consumer.create_lease_table),
            metrics: context.metrics.clone(),
        };
        pruner.run(stages_stop.clone()).await?;
        Ok(())
    };
    context.health.set_ready(true);
    tracing::info!(
        stages = ?config.stages,
        telemetry_stream = %config.telemetry_stream,
        player_state_table = %config.player_state_table,
        "running"
    );
    // Whichever stage fails first stops the others; each still flushes and releases
    // its leases on the way out.
    let stop_on_failure = |stage: &'static str, result: Result<(), Error>| {
        if let Err(error) = &result {
            tracing::error!(stage, %error, "stage failed; stopping the worker");
            context.health.set_ready(false);
            stages_stop.cancel();
        }
        result
    };
    let (events, levels, pruner) = tokio::join!(
        async { stop_on_failure("events", events.await) },
        async { stop_on_failure("levels", levels.await) },
        async { stop_on_failure("pruner", pruner.await) },
    );
    events.and(levels).and(pruner)
}
