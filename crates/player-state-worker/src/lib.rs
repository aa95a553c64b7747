//! player-state-worker: live game state in DynamoDB.
//!
//! - events stage: telemetry → one conditional update per player per batch in PlayerState;
//! - level stage: PlayerState's stream → exactly-once LevelState and Transitions counts;
//! - pruner: deletes idle players (one instance at a time).
//!
//! Today the service checks its tables, reports health and stops cleanly; the stages
//! arrive with the shard consumer.

use clap::Parser;
use pipeline_runtime::config::parse_resource_name;
use pipeline_runtime::resources::{self, MissingResources, Resource, TableSpec};
use pipeline_runtime::{AwsArgs, ServiceArgs, ServiceContext};

pub const SERVICE: &str = "player-state-worker";

/// Settings of the player-state-worker.
#[derive(Debug, Clone, Parser)]
#[command(name = SERVICE, version, about = "Telemetry → PlayerState → exactly-once LevelState and Transitions in DynamoDB")]
pub struct Config {
    /// Kinesis stream the games write telemetry events to.
    #[arg(long, env = "TELEMETRY_STREAM", default_value = "telemetry", value_parser = parse_resource_name)]
    pub telemetry_stream: String,

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

    #[command(flatten)]
    pub service: ServiceArgs,

    #[command(flatten)]
    pub aws: AwsArgs,
}

/// Why the worker stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    MissingResources(#[from] MissingResources),
}

/// Runs the worker until `context.shutdown` is cancelled.
pub async fn run(config: Config, context: ServiceContext) -> Result<(), Error> {
    resources::require(
        &context.aws,
        &[
            Resource::Stream {
                name: config.telemetry_stream.clone(),
            },
            Resource::Table(TableSpec::player_state(&config.player_state_table)),
            Resource::Table(TableSpec::level_state(&config.level_state_table)),
            Resource::Table(TableSpec::transitions(&config.transitions_table)),
        ],
    )
    .await?;
    context.health.set_ready(true);
    tracing::info!(
        telemetry_stream = %config.telemetry_stream,
        player_state_table = %config.player_state_table,
        "resources found; idle until shutdown"
    );
    context.shutdown.cancelled().await;
    Ok(())
}
