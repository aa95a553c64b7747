//! `pipelinectl setup`: creates every AWS resource the pipeline needs.
//!
//! Idempotent: a resource that exists in the expected shape is left alone, one that
//! exists in another shape is reported as an error (setup never deletes or reshapes
//! data), and a second run changes nothing.

pub mod dynamodb;
pub mod kinesis;
pub mod s3;

use std::collections::BTreeSet;
use std::fmt;

use clap::Args;
use live_state::TableNames;
use pipeline_runtime::AwsClients;
use pipeline_runtime::config::parse_resource_name;
use pipeline_runtime::resources::{Resource, TableSpec};

/// Names and sizes of the resources; each name also configures the services.
#[derive(Debug, Clone, Args)]
pub struct SetupArgs {
    /// Only check that every resource exists in the expected shape; create nothing
    /// (with `--warehouse-only`: that the warehouse schema is current).
    #[arg(long, env = "SETUP_VERIFY", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub verify: bool,

    /// Kinesis stream the games write telemetry events to.
    #[arg(long, env = "TELEMETRY_STREAM", default_value = "telemetry", value_parser = parse_resource_name)]
    pub telemetry_stream: String,

    /// The warehouse whose schema setup creates or upgrades (skipped when not configured).
    #[command(flatten)]
    pub warehouse: warehouse::WarehouseArgs,

    /// Only the warehouse: create or upgrade its schema and grant its users, leaving
    /// streams, bucket and tables alone (a deployment whose templates made those).
    #[arg(long, env = "SETUP_WAREHOUSE_ONLY", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub warehouse_only: bool,

    /// Warehouse users (comma-separated) that load batches (the redshift-connector's):
    /// setup, run as the schema's owner, grants them what a load needs and no more.
    #[arg(long, env = "WAREHOUSE_LOADER_USERS", value_delimiter = ',', default_value = "")]
    pub warehouse_loader_users: Vec<String>,

    /// Warehouse users (comma-separated) that only read (`pipelinectl summary`,
    /// `heatmap`, dashboards): setup grants them SELECT.
    #[arg(long, env = "WAREHOUSE_READER_USERS", value_delimiter = ',', default_value = "")]
    pub warehouse_reader_users: Vec<String>,

    /// Shards of the telemetry stream when it is created (1 MB/s or 1,000 records/s of writes each).
    #[arg(long, env = "TELEMETRY_SHARDS", default_value_t = 2, value_parser = clap::value_parser!(i32).range(1..=500))]
    pub telemetry_shards: i32,

    /// Kinesis stream carrying one pointer per batch file.
    #[arg(long, env = "FILES_STREAM", default_value = "files", value_parser = parse_resource_name)]
    pub files_stream: String,

    /// Shards of the files stream when it is created.
    #[arg(long, env = "FILES_SHARDS", default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=500))]
    pub files_shards: i32,

    /// S3 bucket of the data lake.
    #[arg(long, env = "BUCKET", value_parser = parse_resource_name)]
    pub bucket: String,

    #[command(flatten)]
    pub tables: TableNames,

    /// Lease table of the s3-connector.
    #[arg(long, env = "S3_CONNECTOR_LEASE_TABLE", default_value = "s3-connector", value_parser = parse_resource_name)]
    pub s3_connector_lease_table: String,

    /// Lease table of the redshift-connector.
    #[arg(long, env = "REDSHIFT_CONNECTOR_LEASE_TABLE", default_value = "redshift-connector", value_parser = parse_resource_name)]
    pub redshift_connector_lease_table: String,

    /// Lease table of the cron-connector's singleton lease.
    #[arg(long, env = "CRON_CONNECTOR_LEASE_TABLE", default_value = "cron-connector", value_parser = parse_resource_name)]
    pub cron_connector_lease_table: String,

    #[command(flatten)]
    pub lease_tables: live_state::LeaseTableNames,
}

/// A Kinesis stream to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSpec {
    pub name: String,
    pub shards: i32,
}

/// Everything setup creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub streams: Vec<StreamSpec>,
    pub bucket: String,
    pub tables: Vec<TableSpec>,
}

impl SetupArgs {
    pub fn plan(&self) -> Plan {
        Plan {
            streams: vec![
                StreamSpec {
                    name: self.telemetry_stream.clone(),
                    shards: self.telemetry_shards,
                },
                StreamSpec {
                    name: self.files_stream.clone(),
                    shards: self.files_shards,
                },
            ],
            bucket: self.bucket.clone(),
            tables: self
                .tables
                .specs()
                .into_iter()
                .chain([
                    TableSpec::lease_table(&self.s3_connector_lease_table),
                    TableSpec::worker_table(&self.s3_connector_lease_table),
                    TableSpec::lease_table(&self.redshift_connector_lease_table),
                    TableSpec::worker_table(&self.redshift_connector_lease_table),
                    TableSpec::lease_table(&self.cron_connector_lease_table),
                    TableSpec::lease_table(&self.lease_tables.player_state_lease_table),
                    TableSpec::worker_table(&self.lease_tables.player_state_lease_table),
                    TableSpec::lease_table(&self.lease_tables.level_state_lease_table),
                    TableSpec::worker_table(&self.lease_tables.level_state_lease_table),
                    TableSpec::lease_table(&self.lease_tables.pruner_lease_table),
                ])
                .collect(),
        }
    }
}

impl Plan {
    /// Every resource of the plan, for verification.
    pub fn resources(&self) -> Vec<Resource> {
        let mut resources: Vec<Resource> = self
            .streams
            .iter()
            .map(|s| Resource::Stream { name: s.name.clone() })
            .collect();
        resources.push(Resource::Bucket {
            name: self.bucket.clone(),
        });
        resources.extend(self.tables.iter().cloned().map(Resource::Table));
        resources
    }

    /// Two resources of one kind under one name would share data: refuse before creating anything.
    pub fn check_names(&self) -> Result<(), SetupError> {
        let mut seen = BTreeSet::new();
        for name in self.tables.iter().map(|t| &t.name) {
            if !seen.insert(name) {
                return Err(SetupError::DuplicateName {
                    kind: "DynamoDB table",
                    name: name.clone(),
                });
            }
        }
        let mut seen = BTreeSet::new();
        for name in self.streams.iter().map(|s| &s.name) {
            if !seen.insert(name) {
                return Err(SetupError::DuplicateName {
                    kind: "Kinesis stream",
                    name: name.clone(),
                });
            }
        }
        Ok(())
    }
}

/// What setup did to one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Created(String),
    Exists(String),
    Changed(String),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Created(what) => write!(f, "created  {what}"),
            Outcome::Exists(what) => write!(f, "exists   {what}"),
            Outcome::Changed(what) => write!(f, "updated  {what}"),
        }
    }
}

/// Why setup stopped.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{kind} name {name} is used twice; give each its own name")]
    DuplicateName { kind: &'static str, name: String },
    #[error("{resource}: {message}")]
    Aws { resource: String, message: String },
    #[error("{resource} exists but {problem}; setup does not reshape existing resources")]
    Mismatch { resource: String, problem: String },
    #[error("{resource} did not become active within {seconds} s")]
    NotActive { resource: String, seconds: u64 },
}

/// Creates what is missing, in dependency-free order, and reports what it did.
pub async fn apply(aws: &AwsClients, plan: &Plan) -> Result<Vec<Outcome>, SetupError> {
    plan.check_names()?;
    let mut outcomes = Vec::new();
    let kinesis = aws.kinesis();
    for stream in &plan.streams {
        outcomes.push(kinesis::ensure_stream(&kinesis, stream).await?);
    }
    outcomes.push(s3::ensure_bucket(&aws.s3(), &plan.bucket, aws.region()).await?);
    let dynamodb = aws.dynamodb();
    for table in &plan.tables {
        outcomes.extend(dynamodb::ensure_table(&dynamodb, table).await?);
    }
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        setup: SetupArgs,
    }

    fn plan(args: &[&str]) -> Plan {
        let mut argv = vec!["setup", "--bucket", "lake"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).expect("valid arguments").setup.plan()
    }

    #[test]
    fn default_plan_has_every_resource_once() {
        let plan = plan(&[]);
        plan.check_names().expect("distinct names");
        // 2 streams, the bucket, 3 state tables, 6 lease tables and the worker tables of
        // the 4 shard consumers.
        assert_eq!(plan.resources().len(), 2 + 1 + 3 + 6 + 4);
        assert!(plan.tables.iter().any(|t| t.name == "PlayerState" && t.stream));
        assert!(
            plan.tables
                .iter()
                .any(|t| t.name == "Transitions" && t.ttl_attribute == Some("expiresAt"))
        );
    }

    #[test]
    fn a_lease_table_named_like_a_data_table_is_refused() {
        let plan = plan(&["--s3-connector-lease-table", "PlayerState"]);
        assert!(matches!(plan.check_names(), Err(SetupError::DuplicateName { .. })));
    }

    #[test]
    fn one_stream_for_both_roles_is_refused() {
        let plan = plan(&["--files-stream", "telemetry"]);
        assert!(matches!(plan.check_names(), Err(SetupError::DuplicateName { .. })));
    }
}
