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
//! The invariant: a level's `playerCount` in LevelState is the number of PlayerState
//! items on that level (for every level id that can key a count). The worker keeps it
//! by applying each PlayerState change to LevelState exactly once, from the stream,
//! in the same transaction that moves its shard's guard.

pub mod level_state;
pub mod player_state;
mod scan;
pub mod transitions;

/// The IAM actions of the reads of this crate.
pub const IAM_ACTIONS: &[&str] = &["dynamodb:Scan"];
