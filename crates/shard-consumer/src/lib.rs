//! The stream consumer of the pipeline: our Kinesis Client Library.
//!
//! Leases live in DynamoDB in the Java KCL 2.x format ([`lease`]); workers renew
//! them by conditional writes, take expired ones and steal toward balance
//! ([`assignment`], a pure function of a lease-table snapshot); one task per held
//! shard reads records, de-aggregates KPL records ([`kpl`]) and hands batches to the
//! application's [`RecordProcessor`], which checkpoints what it made durable.
//! Two sources share one interface ([`Source`]): Kinesis Data Streams ([`kinesis`])
//! and DynamoDB Streams ([`dynamodb_streams`]). [`singleton`] gives "one instance at
//! a time" jobs the same lease rules.
//!
//! Guarantees: at-least-once delivery per shard, in order; a checkpoint is written
//! only by the current lease holder and only moves forward; a child shard starts
//! only after its parents ended; leases are released on shutdown.

pub mod args;
pub mod assignment;
// Backoff lives with the runtime (start-up checks retry too); its old path still works.
pub use pipeline_runtime::backoff;
pub mod config;
pub mod consumer;
pub mod dynamodb_streams;
pub mod error;
pub mod kinesis;
pub mod kpl;
pub mod lease;
pub mod lease_table;
pub mod position;
pub mod processor;
mod shard;
pub mod singleton;
pub mod source;

pub use args::ConsumerArgs;
pub use config::{ConsumerConfig, InitialPosition};
pub use consumer::{Consumer, ConsumerError};
pub use lease_table::LeaseTable;
pub use position::{Checkpoint, RecordPosition, SequenceNumber};
pub use processor::{Batch, Checkpointer, CheckpointerError, ProcessorError, ProcessorFactory, RecordProcessor};
pub use shard::ShardOutcome;
pub use source::{Shard, Source, StartPosition, StreamRecord};
