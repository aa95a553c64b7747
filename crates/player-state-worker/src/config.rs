//! The worker's settings, and the stages built from them.

use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use event_model::{EventSchemas, Rules};
use live_state::TableNames;
use pipeline_runtime::ServiceContext;
use pipeline_runtime::config::{EventDataArgs, FutureWindowArgs, parse_resource_name};
use pipeline_runtime::resources::Resource;
use pipeline_runtime::s3::Lake;
use pipeline_runtime::schemas::SchemaArgs;
use shard_consumer::LeaseTable;
use shard_consumer::service::StreamServiceArgs;
use shard_consumer::singleton::SingletonLease;

use crate::events_stage::{self, EventsStage};
use crate::level_stage::{self, LevelStage};
use crate::pruner::Pruner;
use crate::quarantine::Quarantine;
use crate::{events, pruner};

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
#[command(name = crate::SERVICE, version, about = "Telemetry → PlayerState → exactly-once LevelState and Transitions in DynamoDB")]
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

    #[command(flatten)]
    pub tables: TableNames,

    /// Lease tables (each created if missing).
    #[command(flatten)]
    pub lease_tables: live_state::LeaseTableNames,

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

    #[command(flatten)]
    pub future_window: FutureWindowArgs,

    #[command(flatten)]
    pub event_data: EventDataArgs,

    #[command(flatten)]
    pub schemas: SchemaArgs,

    #[command(flatten)]
    pub runtime: StreamServiceArgs,
}

impl Config {
    /// Whether this process runs `stage`.
    pub fn runs(&self, stage: Stage) -> bool {
        self.stages.contains(&stage)
    }

    /// What must exist before the worker starts.
    pub fn resources(&self) -> Vec<Resource> {
        [
            Resource::Stream {
                name: self.telemetry_stream.clone(),
            },
            Resource::Bucket {
                name: self.bucket.clone(),
            },
        ]
        .into_iter()
        .chain(self.tables.specs().map(Resource::Table))
        .collect()
    }

    fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }

    /// Where `application` stores the records it can never apply.
    fn quarantine(&self, application: &'static str, context: &ServiceContext) -> Quarantine {
        Quarantine {
            lake: Lake {
                s3: context.aws.s3(),
                bucket: self.bucket.clone(),
                sse_kms_key_id: self.sse_kms_key_id.clone(),
            },
            application,
            metrics: context.metrics.clone(),
        }
    }

    /// The events stage: telemetry → PlayerState, with the game's schemas (read by
    /// [`SchemaArgs::load`]).
    pub fn events_stage(&self, context: &ServiceContext, schemas: Arc<EventSchemas>) -> EventsStage {
        EventsStage {
            dynamodb: context.aws.dynamodb(),
            table: self.tables.player_state_table.clone(),
            rules: Rules {
                future_window_ms: self.future_window.millis(),
                max_event_data_bytes: self.event_data.max_bytes(),
                max_event_data_depth: self.event_data.max_depth(),
                schemas,
                ..Rules::default()
            },
            format: self.input_format,
            level_context: self.snowplow_level_context.clone(),
            idle_timeout: self.idle_timeout(),
            concurrency: usize::try_from(self.write_concurrency).unwrap_or(16),
            quarantine: self.quarantine(events_stage::APPLICATION, context),
            metrics: context.metrics.clone(),
        }
    }

    /// The level stage: PlayerState's stream → LevelState and Transitions.
    pub fn level_stage(&self, context: &ServiceContext) -> LevelStage {
        LevelStage {
            dynamodb: context.aws.dynamodb(),
            level_table: self.tables.level_state_table.clone(),
            transitions_table: self.tables.transitions_table.clone(),
            bucket: Duration::from_secs(self.transition_bucket_secs),
            transition_ttl: Duration::from_secs(self.transition_ttl_secs),
            quarantine: self.quarantine(level_stage::APPLICATION, context),
            metrics: context.metrics.clone(),
        }
    }

    /// The idle-player pruner, under its singleton lease.
    pub fn pruner(&self, context: &ServiceContext) -> Pruner {
        let consumer = self.runtime.consumer.config(pruner::APPLICATION);
        Pruner {
            dynamodb: context.aws.dynamodb(),
            table: self.tables.player_state_table.clone(),
            level_state_table: self.tables.level_state_table.clone(),
            idle_timeout: self.idle_timeout(),
            interval: Duration::from_secs(self.prune_interval_secs),
            segments: self.prune_segments,
            lease: SingletonLease::new(
                LeaseTable::new(context.aws.dynamodb(), &self.lease_tables.pruner_lease_table),
                live_state::PRUNER_LEASE_KEY,
                &consumer.worker_id,
                consumer.failover,
            )
            .creating_table(consumer.create_lease_table),
            metrics: context.metrics.clone(),
        }
    }
}

fn parse_level_context(value: &str) -> Result<events::SnowplowLevelContext, String> {
    events::SnowplowLevelContext::from_schema(value)
        .ok_or_else(|| "expected an Iglu URI: iglu:<vendor>/<name>/jsonschema/<major>-<minor>-<patch>".into())
}
