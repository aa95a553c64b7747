//! Every AWS call pipelinectl's commands make, one module per store and one documented
//! function per call; the commands decide what to read or send and whether to try again.
//! (`setup` creates the resources through its own `setup::{kinesis, dynamodb, s3}`; the
//! live-state tables are read through their own library.)
//!
//! - [`lake`]: the bucket: a prefix listed, an object read, a dead letter deleted, a
//!   replaced version deleted;
//! - [`level_state`]: `reconcile-levels`' guard reads and conditional count corrections;
//! - [`player_state`]: a player's PlayerState item deleted (`forget`);
//! - [`streams`]: Kinesis: a stream's shard map, records put in batches or one at a time.

pub mod lake;
pub mod level_state;
pub mod player_state;
pub mod streams;
