//! The stream consumer of the pipeline: our Kinesis Client Library.
//!
//! Leases live in a lease table in the Java KCL 2.x format ([`lease`]; DynamoDB in
//! [`lease_table`], behind the [`LeaseStore`] trait); a worker renews the leases it
//! holds on a task of its own ([`renewer`]), takes expired ones and steals toward
//! balance ([`assignment`] decides, a pure function of a lease-table snapshot), and
//! keeps the table in step with the stream's shards and their lineage ([`shard_sync`]
//! decides). One task per held shard ([`shard`], a small state machine) reads
//! records, de-aggregates KPL records ([`kpl`]) and hands batches to the
//! application's [`RecordProcessor`], which checkpoints what it made durable. Two
//! sources share one interface ([`Source`]): Kinesis Data Streams ([`kinesis`]) and
//! DynamoDB Streams ([`dynamodb_streams`]). [`singleton`] gives "one instance at a
//! time" jobs the same lease rules.
//!
//! Guarantees: at-least-once delivery per shard, in order; a checkpoint is written
//! only by the current lease holder and only moves forward; a child shard starts only
//! after its parents ended, and a closed shard whose lineage moved on is never read
//! again; a trimmed or vanished shard never holds its children back; a worker stops
//! reading a shard once its own clock says the lease may have passed to another;
//! leases are released on shutdown.

pub mod args;
pub mod assignment;
// Backoff lives with the runtime (start-up checks retry too); its old path still works.
pub use pipeline_runtime::backoff;
pub mod config;
pub mod consumer;
pub mod dynamodb_streams;
pub mod error;
mod holding;
pub mod kinesis;
pub mod kpl;
pub mod lease;
pub mod lease_store;
pub mod lease_table;
pub mod position;
pub mod processor;
mod renewer;
mod shard;
pub mod shard_sync;
pub mod singleton;
pub mod source;

pub use args::ConsumerArgs;
pub use config::{ConsumerConfig, InitialPosition};
pub use consumer::{Consumer, ConsumerError};
pub use lease_store::LeaseStore;
pub use lease_table::LeaseTable;
pub use position::{Checkpoint, RecordPosition, SequenceNumber};
pub use processor::{Batch, Checkpointer, CheckpointerError, ProcessorError, ProcessorFactory, RecordProcessor};
pub use shard::ShardOutcome;
pub use source::{Shard, Source, StartPosition, StreamRecord};
