//! PlayerState: one item per present player. An event moves a player only forward in
//! event time; an idle player is deleted. Both reach LevelState through the stream.

use pipeline_runtime::resources::{KeyAttribute, TableSpec};

/// Hash key: the player's id.
pub const PLAYER_ID: &str = "playerId";
/// The level the player is on.
pub const LEVEL_ID: &str = "levelId";
/// Event time (ms since the epoch) of the player's latest event.
pub const LAST_UPDATED: &str = "lastUpdated";

/// The table's shape: keyed by player, with a stream of old and new images.
pub fn spec(name: &str) -> TableSpec {
    TableSpec {
        stream: true,
        ..TableSpec::hash_keyed(name, KeyAttribute::string(PLAYER_ID))
    }
}
