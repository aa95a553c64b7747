//! The stream consumer of the pipeline: our Kinesis Client Library.
//!
//! Leases live in a lease table in the Java KCL 2.x format ([`lease`]; DynamoDB in
//! [`lease_table`], behind the [`LeaseStore`] trait). Unlike the Java KCL, a worker does
//! not renew each lease: it writes one heartbeat per renewal interval to a worker table
//! beside the lease table ([`heartbeat`]), and others judge it, and so its leases, by
//! that heartbeat ([`membership`]). A worker takes free leases toward balance and asks
//! the busiest worker to hand one over when none are free ([`assignment`] decides, a
//! pure function of a lease-table snapshot); it scans the lease table only when there
//! may be something to take. The leader keeps the table in step with the stream's
//! shards and their lineage ([`shard_sync`] decides). These are units of their own, in
//! the Java KCL's shape: the renewer ([`heartbeat`]), the taker ([`taker`]), the shard
//! syncer ([`shard_syncer`]) and the shard readers ([`readers`]), tied by [`worker`] and
//! driven from one loop in [`consumer`]. One task per held shard
//! ([`shard`], a small state machine) reads records, de-aggregates KPL records ([`kpl`])
//! and hands batches to the application's [`RecordProcessor`], which checkpoints what it
//! made durable: applications that buffer across batches plug a pure [`Buffer`] and an
//! [`Output`] into [`buffered`], those that make each batch durable at once write
//! through [`per_batch`], and [`service`] wires a consumer into a service. Two sources share one interface ([`Source`]): Kinesis Data Streams
//! ([`kinesis`]) and DynamoDB Streams ([`dynamodb_streams`]). [`singleton`] gives "one
//! instance at a time" jobs a lease of their own.
//!
//! Guarantees: at-least-once delivery per shard, in order; a checkpoint is written
//! only by the current lease holder and only moves forward; a child shard starts only
//! after its parents ended, and a closed shard whose lineage moved on is never read
//! again; a trimmed or vanished shard never holds its children back; a worker stops
//! reading a shard once its own clock says others may judge it dead; a lease changes
//! hands between live workers only by a hand-over after a flush, so a shard never has
//! two readers; leases are released on shutdown.

pub mod args;
pub mod assignment;
// Backoff lives with the runtime (start-up checks retry too); its old path still works.
pub use pipeline_runtime::backoff;
pub mod buffered;
pub mod config;
pub mod consumer;
pub mod dynamodb_streams;
pub mod error;
mod heartbeat;
mod holding;
pub mod kinesis;
pub mod kpl;
pub mod lease;
pub mod lease_store;
pub mod lease_table;
pub mod membership;
pub mod per_batch;
pub mod position;
pub mod processor;
mod readers;
pub mod service;
mod shard;
pub mod shard_sync;
mod shard_syncer;
pub mod singleton;
pub mod source;
mod taker;
mod worker;

pub use args::ConsumerArgs;
pub use buffered::{Buffer, BufferedFactory, BufferedProcessor, FlushError, Flushing, MemoryBudget, Output};
pub use config::{ConsumerConfig, InitialPosition};
pub use consumer::{Consumer, ConsumerError};
pub use lease_store::LeaseStore;
pub use lease_table::LeaseTable;
pub use per_batch::{BatchOutput, PerBatchFactory};
pub use position::{Checkpoint, RecordPosition, SequenceNumber};
pub use processor::{Batch, Checkpointer, CheckpointerError, ProcessorError, ProcessorFactory, RecordProcessor};
pub use service::{StreamServiceArgs, StreamServiceError, run_consumer};
pub use shard::ShardOutcome;
pub use source::{Shard, Source, StartPosition, StreamRecord};
