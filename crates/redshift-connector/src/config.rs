//! The connector's settings.

use std::time::Duration;

use clap::Parser;
use pipeline_runtime::config::parse_resource_name;
use pipeline_runtime::resources::Resource;
use shard_consumer::StreamServiceArgs;
use warehouse::WarehouseArgs;

use crate::SERVICE;
use crate::pending::{LoadLimits, Loading};

/// Settings of the redshift-connector.
#[derive(Debug, Clone, Parser)]
#[command(name = SERVICE, version, about = "Batch pointers on the files stream → exactly-once loads into Redshift")]
pub struct Config {
    /// Kinesis stream carrying one pointer per batch file.
    #[arg(long, env = "FILES_STREAM", default_value = "files", value_parser = parse_resource_name)]
    pub files_stream: String,

    /// S3 bucket holding the batches (and the manifests this connector writes).
    #[arg(long, env = "BUCKET", value_parser = parse_resource_name)]
    pub bucket: String,

    /// DynamoDB lease table of this connector's shard leases (created if missing).
    #[arg(long = "redshift-connector-lease-table", env = "REDSHIFT_CONNECTOR_LEASE_TABLE", default_value = "redshift-connector", value_parser = parse_resource_name)]
    pub lease_table: String,

    /// Load when this many files are pending.
    #[arg(long, env = "LOAD_MAX_FILES", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub load_max_files: u64,

    /// Load when the pending files hold this many MiB (compressed).
    #[arg(long, env = "LOAD_MAX_MIB", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    pub load_max_mib: u64,

    /// Load this many seconds after the first pending pointer arrived, even if little is pending.
    #[arg(long, env = "LOAD_MAX_AGE_SECS", default_value_t = 120,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub load_max_age_secs: u64,

    /// Seconds a batch file the warehouse keeps refusing (missing, not gzip, a line it
    /// cannot load) is retried before its pointer goes to `dead-letters/` in the bucket
    /// and the rest of the load goes on (0: at the first refusal). `pipelinectl
    /// dead-letters redrive` loads them once the cause is fixed.
    #[arg(long, env = "DEAD_LETTER_AFTER_SECS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(0..=604_800))]
    pub dead_letter_after_secs: u64,

    /// KMS key (id or ARN) for SSE-KMS on the manifests and dead letters written; unset = the bucket's default encryption.
    #[arg(long, env = "SSE_KMS_KEY_ID")]
    pub sse_kms_key_id: Option<String>,

    #[command(flatten)]
    pub warehouse: WarehouseArgs,

    /// The consumer's, the service's and AWS's settings.
    #[command(flatten)]
    pub runtime: StreamServiceArgs,
}

impl Config {
    /// The most files one load holds.
    pub fn max_files(&self) -> usize {
        usize::try_from(self.load_max_files).unwrap_or(usize::MAX)
    }

    /// What every shard's loads follow.
    pub fn loading(&self) -> Loading {
        Loading {
            bucket: self.bucket.clone(),
            limits: LoadLimits {
                max_files: self.max_files(),
                max_bytes: self.load_max_mib * 1024 * 1024,
                max_age: Duration::from_secs(self.load_max_age_secs),
            },
        }
    }

    pub fn dead_letter_after(&self) -> Duration {
        Duration::from_secs(self.dead_letter_after_secs)
    }

    /// What must exist before the connector starts.
    pub fn resources(&self) -> Vec<Resource> {
        let bucket = Resource::Bucket {
            name: self.bucket.clone(),
        };
        vec![
            Resource::Stream {
                name: self.files_stream.clone(),
            },
            bucket,
        ]
    }
}
