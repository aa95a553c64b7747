//! A full, uniquely named set of pipeline resources for one test.

use clap::Parser;
use pipeline_runtime::AwsClients;
use pipelinectl::setup::{self, SetupArgs};

/// The env vars that name the pipeline's resources, as setup and the services read them.
pub const RESOURCE_VARS: &[&str] = &[
    "TELEMETRY_STREAM",
    "FILES_STREAM",
    "BUCKET",
    "PLAYER_STATE_TABLE",
    "LEVEL_STATE_TABLE",
    "TRANSITIONS_TABLE",
    "S3_CONNECTOR_LEASE_TABLE",
    "REDSHIFT_CONNECTOR_LEASE_TABLE",
    "CRON_CONNECTOR_LEASE_TABLE",
    "PLAYER_STATE_LEASE_TABLE",
    "LEVEL_STATE_LEASE_TABLE",
    "PRUNER_LEASE_TABLE",
];

/// Unique names for every resource of the pipeline.
#[derive(Debug, Clone)]
pub struct Resources {
    names: Vec<(&'static str, String)>,
}

#[derive(Parser)]
struct SetupCli {
    #[command(flatten)]
    setup: SetupArgs,
}

impl Resources {
    /// Fresh names; nothing is created yet.
    pub fn unique() -> Self {
        let names = RESOURCE_VARS
            .iter()
            .map(|var| (*var, crate::stack::unique_name(&var.to_lowercase().replace('_', "-"))))
            .collect();
        Self { names }
    }

    /// The names `name_of` gives each of [`RESOURCE_VARS`].
    pub fn named(name_of: impl Fn(&str) -> Option<String>) -> Self {
        let names = RESOURCE_VARS
            .iter()
            .map(|var| (*var, name_of(var).unwrap_or_else(|| panic!("no name for {var}"))))
            .collect();
        Self { names }
    }

    /// The name held by `var` (one of [`RESOURCE_VARS`]).
    pub fn name(&self, var: &str) -> &str {
        self.names
            .iter()
            .find(|(v, _)| *v == var)
            .map(|(_, name)| name.as_str())
            .unwrap_or_else(|| panic!("{var} is not a resource variable"))
    }

    /// `(VAR, name)` pairs for a child process's environment.
    pub fn env(&self) -> Vec<(&str, &str)> {
        self.names.iter().map(|(var, name)| (*var, name.as_str())).collect()
    }

    /// The setup arguments for these names.
    pub fn setup_args(&self, extra: &[&str]) -> SetupArgs {
        let mut argv = vec!["setup".to_string()];
        for (var, name) in &self.names {
            argv.push(format!("--{}={name}", var.to_lowercase().replace('_', "-")));
        }
        argv.extend(extra.iter().map(|s| s.to_string()));
        SetupCli::try_parse_from(argv).expect("setup arguments").setup
    }

    /// Creates everything with `pipelinectl setup`'s own code.
    pub async fn create(&self, aws: &AwsClients) {
        self.create_with(aws, &[]).await;
    }

    /// Creates everything, with more setup arguments (`--telemetry-shards=2`).
    pub async fn create_with(&self, aws: &AwsClients, extra: &[&str]) {
        setup::apply(aws, &self.setup_args(extra).plan()).await.expect("setup");
    }

    /// Deletes everything (best effort).
    pub async fn delete(&self, aws: &AwsClients) {
        for (var, name) in &self.names {
            match *var {
                "TELEMETRY_STREAM" | "FILES_STREAM" => crate::stack::delete_stream(aws, name).await,
                "BUCKET" => crate::stack::delete_bucket(aws, name).await,
                _ => crate::stack::delete_table(aws, name).await,
            }
        }
    }
}
