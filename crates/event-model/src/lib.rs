//! The telemetry event and the files made of it. No IO: every function here is pure
//! and unit-tested; the services do the reading and writing.
//!
//! - [`event`]: parse, validate and normalize one record into an [`Event`], or reject it
//!   with a [`Rejection`] (a machine-readable [`Reason`] and the field);
//! - [`batch`]: gzipped JSON-lines batch files;
//! - [`rejected`]: the line format of `errors/`;
//! - [`pointer`]: the `files` stream's message; [`dead_letter`]: one the warehouse gave up on;
//! - [`layout`]: the S3 key layout;
//! - [`schema`]: a game's JSON Schema per event type;
//! - [`snowplow`]: Snowplow enriched events (TSV) as the Analytics SDKs' JSON.

pub mod batch;
pub mod dead_letter;
pub mod event;
pub mod event_data;
pub mod layout;
pub mod normalization;
pub mod pointer;
pub mod rejected;
pub mod rejection;
pub mod schema;
pub mod snowplow;

pub use batch::BatchFile;
pub use dead_letter::{DEAD_LETTER_PREFIX, DeadLetter};
pub use event::{Event, Rules, level_id, player_id};
pub use layout::{BatchKind, batch_key, hour_prefixes, quarantine_key};
pub use normalization::{Normalization, Normalizations};
pub use pointer::FilePointer;
pub use rejected::RejectedRecord;
pub use rejection::{Reason, Rejection};
pub use schema::{EventSchemas, SchemaMode};
