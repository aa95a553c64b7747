//! Every AWS call of the worker, one documented function per call with the limits it
//! respects, returning the runtime's error kinds. The stages decide what to write and
//! what a failure means; nothing outside this module builds an SDK request. (The
//! table reads are the `live-state` crate's; the stream and lease calls the
//! shard consumer's.)

pub mod level_counts;
pub mod player_state;
pub mod quarantine;
