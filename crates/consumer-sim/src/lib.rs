//! A deterministic simulation of the shard consumer, in the spirit of FoundationDB's
//! simulator and TigerBeetle's VOPR: the real [`shard_consumer::Consumer`], unchanged,
//! runs against an in-memory stream ([`stream`]) and an in-memory lease table
//! ([`lease_table`]) on tokio's paused clock, so days of stream life pass in seconds
//! and one seed decides everything that happens.
//!
//! What the models do that no emulator does: DynamoDB Streams shards roll over about
//! every 4 hours and are trimmed after 24; Kinesis streams split and merge; iterators
//! expire; the lease table throttles, stalls, and applies writes whose answers are
//! lost ([`faults`]). Workers are killed, restarted, stalled past the failover time
//! and stopped gracefully ([`scenario`]). Invariants are checked as the run goes
//! ([`observer`]), against the models' ground truth.
//!
//! The same models, without faults or records, measure the consumer at scale
//! ([`scale`]): balance times and lease-table cost for thousands of shards, beside the
//! Java KCL 2.x's (`cargo bench -p consumer-sim --bench scale`).
//!
//! Where the models' behaviour could drift from the real services, the contract test
//! (`tests/contract.rs`) runs the same operations against them and
//! against kinesalite and moto.

pub mod faults;
pub mod fleet;
pub mod lease_table;
pub mod log;
pub mod observer;
pub mod processor;
pub mod report;
pub mod scale;
pub mod scenario;
pub mod stream;
pub mod world;

pub use report::Report;
pub use scenario::{Scenario, run};
