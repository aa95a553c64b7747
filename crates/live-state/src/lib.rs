//! The live game state in DynamoDB: what the three tables hold, how they are keyed,
//! and how they are read back. The player-state-worker writes them; `pipelinectl`
//! creates them (`setup`) and reads them (`levels`, `summary`).
//!
//! - [`player_state`]: one item per present player (hash key `playerId`), its level
//!   and the event time of its last event. Its NEW_AND_OLD_IMAGES stream is what the
//!   level counts are computed from.
//! - [`level_state`]: one item per level (hash key `levelId`) with its `playerCount`.
//! - [`transitions`]: counts of level-to-level moves per time bucket (hash key
//!   `bucketStart`, range key `transition` = `from`␟`to`), expiring through TTL on
//!   `expiresAt`; the level stage's per-shard guards live there too, under a bucket
//!   no event time can have.
//!
//! - [`drift`]: where LevelState is not the recount of PlayerState, read-only (shared
//!   by `pipelinectl reconcile-levels` and the cron-connector's scheduled check).
//!
//! The invariant: a level's `playerCount` in LevelState is the number of PlayerState
//! items on that level (for every level id that can key a count). The worker keeps it
//! by applying each PlayerState change to LevelState exactly once, from the stream,
//! in the same transaction that moves its shard's guard.

pub mod drift;
pub mod level_state;
pub mod player_state;
mod scan;
pub mod transitions;

pub use scan::Consistency;

use pipeline_runtime::config::parse_resource_name;
use pipeline_runtime::resources::TableSpec;

/// The IAM actions of the reads of this crate.
pub const IAM_ACTIONS: &[&str] = &["dynamodb:Scan", "dynamodb:GetItem"];

/// The three tables' names: settings of every program that writes or creates them.
#[derive(Debug, Clone, clap::Args)]
pub struct TableNames {
    /// DynamoDB table with each present player's level (must have a NEW_AND_OLD_IMAGES stream).
    #[arg(long, env = "PLAYER_STATE_TABLE", default_value = "PlayerState", value_parser = parse_resource_name)]
    pub player_state_table: String,

    /// DynamoDB table with the player count of each level.
    #[arg(long, env = "LEVEL_STATE_TABLE", default_value = "LevelState", value_parser = parse_resource_name)]
    pub level_state_table: String,

    /// DynamoDB table with level-to-level transition counts per time bucket.
    #[arg(long, env = "TRANSITIONS_TABLE", default_value = "Transitions", value_parser = parse_resource_name)]
    pub transitions_table: String,
}

impl TableNames {
    /// The three tables' shapes under these names.
    pub fn specs(&self) -> [TableSpec; 3] {
        [
            player_state::spec(&self.player_state_table),
            level_state::spec(&self.level_state_table),
            transitions::spec(&self.transitions_table),
        ]
    }
}

/// The key of the idle-player pruner's singleton lease in its lease table (the worker
/// takes it to prune; `reconcile-levels` takes it to pause the pruner).
pub const PRUNER_LEASE_KEY: &str = "pruner";

/// The names of the player-state-worker's three lease tables: settings of the worker,
/// of `pipelinectl setup` (which creates them) and of `reconcile-levels` (which pauses
/// the worker through them).
#[derive(Debug, Clone, clap::Args)]
pub struct LeaseTableNames {
    /// Lease table of the player-state-worker's events stage (telemetry shards).
    #[arg(long, env = "PLAYER_STATE_LEASE_TABLE", default_value = "player-state", value_parser = parse_resource_name)]
    pub player_state_lease_table: String,

    /// Lease table of the player-state-worker's level stage (PlayerState stream shards).
    #[arg(long, env = "LEVEL_STATE_LEASE_TABLE", default_value = "level-state", value_parser = parse_resource_name)]
    pub level_state_lease_table: String,

    /// Lease table of the idle-player pruner's singleton lease.
    #[arg(long, env = "PRUNER_LEASE_TABLE", default_value = "player-state-pruner", value_parser = parse_resource_name)]
    pub pruner_lease_table: String,
}
