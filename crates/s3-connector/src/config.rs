//! The connector's settings.

use std::time::Duration;

use clap::Parser;
use std::sync::Arc;

use event_model::{EventSchemas, Rules};
use pipeline_runtime::config::{EventDataArgs, FutureWindowArgs, parse_resource_name};
use pipeline_runtime::resources::Resource;
use pipeline_runtime::schemas::SchemaArgs;
use shard_consumer::StreamServiceArgs;

use crate::SERVICE;
use crate::batch::{Batching, FlushLimits};

/// Settings of the s3-connector.
///
/// Batching defaults suit production (large files, few objects). For a demo, use
/// `BATCH_MAX_KIB=256 BATCH_MAX_RECORDS=1000 BATCH_MAX_AGE_SECS=5`.
#[derive(Debug, Clone, Parser)]
#[command(name = SERVICE, version, about = "Telemetry stream → validated, gzipped JSON-lines batches in S3 → pointers on the files stream")]
pub struct Config {
    /// Kinesis stream the games write telemetry events to.
    #[arg(long, env = "TELEMETRY_STREAM", default_value = "telemetry", value_parser = parse_resource_name)]
    pub telemetry_stream: String,

    /// Kinesis stream that receives one pointer per batch written to S3.
    #[arg(long, env = "FILES_STREAM", default_value = "files", value_parser = parse_resource_name)]
    pub files_stream: String,

    /// S3 bucket of the data lake (batches under `events/`, rejects under `errors/`).
    #[arg(long, env = "BUCKET", value_parser = parse_resource_name)]
    pub bucket: String,

    /// DynamoDB lease table of this connector's shard leases (created if missing).
    #[arg(long = "s3-connector-lease-table", env = "S3_CONNECTOR_LEASE_TABLE", default_value = "s3-connector", value_parser = parse_resource_name)]
    pub lease_table: String,

    /// Flush a shard's batch at this many KiB of uncompressed JSON lines.
    #[arg(long, env = "BATCH_MAX_KIB", default_value_t = 65_536,
          value_parser = clap::value_parser!(u64).range(1..=4_194_304))]
    pub batch_max_kib: u64,

    /// Flush a shard's batch at this many records.
    #[arg(long, env = "BATCH_MAX_RECORDS", default_value_t = 250_000,
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub batch_max_records: u64,

    /// Flush a shard's batch this many seconds after its first record, even on a quiet stream.
    #[arg(long, env = "BATCH_MAX_AGE_SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub batch_max_age_secs: u64,

    /// MiB of buffered records across all shards; when reached, shards flush and reading pauses.
    #[arg(long, env = "BUFFER_MEMORY_CAP_MIB", default_value_t = 512,
          value_parser = clap::value_parser!(u64).range(16..=4095))]
    pub buffer_memory_cap_mib: u64,

    /// gzip level of the batch files (1 fastest … 9 smallest); 6 measured best for our events.
    #[arg(long, env = "GZIP_LEVEL", default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=9))]
    pub gzip_level: u32,

    /// KMS key (id or ARN) for SSE-KMS on every object written; unset = the bucket's default encryption.
    #[arg(long, env = "SSE_KMS_KEY_ID")]
    pub sse_kms_key_id: Option<String>,

    /// Records larger than this many bytes are rejected as `too_large`.
    #[arg(long, env = "MAX_EVENT_BYTES", default_value_t = 32_768,
          value_parser = clap::value_parser!(u64).range(1024..=1_048_576))]
    pub max_event_bytes: u64,

    #[command(flatten)]
    pub future_window: FutureWindowArgs,

    #[command(flatten)]
    pub event_data: EventDataArgs,

    #[command(flatten)]
    pub schemas: SchemaArgs,

    /// The consumer's, the service's and AWS's settings.
    #[command(flatten)]
    pub runtime: StreamServiceArgs,
}

impl Config {
    pub fn limits(&self) -> FlushLimits {
        FlushLimits {
            max_bytes: self.batch_max_kib * 1024,
            max_records: self.batch_max_records,
            max_age: Duration::from_secs(self.batch_max_age_secs),
        }
    }

    /// What a valid event is, with the game's schemas (read by [`SchemaArgs::load`]).
    pub fn rules(&self, schemas: Arc<EventSchemas>) -> Rules {
        Rules {
            max_event_bytes: usize::try_from(self.max_event_bytes).unwrap_or(usize::MAX),
            future_window_ms: self.future_window.millis(),
            max_event_data_bytes: self.event_data.max_bytes(),
            max_event_data_depth: self.event_data.max_depth(),
            schemas,
        }
    }

    /// What every shard's batches follow.
    pub fn batching(&self, schemas: Arc<EventSchemas>) -> Batching {
        Batching {
            rules: self.rules(schemas),
            limits: self.limits(),
            gzip_level: self.gzip_level,
            bucket: self.bucket.clone(),
        }
    }

    /// What must exist before the connector starts.
    pub fn resources(&self) -> Vec<Resource> {
        let stream = |name: &String| Resource::Stream { name: name.clone() };
        let bucket = Resource::Bucket {
            name: self.bucket.clone(),
        };
        vec![stream(&self.telemetry_stream), stream(&self.files_stream), bucket]
    }

    pub fn memory_cap_bytes(&self) -> usize {
        usize::try_from(self.buffer_memory_cap_mib * 1024 * 1024).unwrap_or(usize::MAX)
    }
}
