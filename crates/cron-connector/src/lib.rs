//! cron-connector: warehouse maintenance on cron schedules (VACUUM, ANALYZE, pruning
//! of `loaded_files`, retention), run by one instance at a time under a singleton
//! lease. Each job's statements run outside transactions. A failure that may pass (a
//! lock, a dropped connection, a server restarting) or that belongs to the data is
//! logged and counted and retried at the job's next time; a fatal one (permissions, a
//! missing table, a refused login) stops the service with its message, since no later
//! run can succeed until someone fixes it.

pub mod jobs;

use std::time::Duration;

use chrono::Utc;
use clap::Parser;
use pipeline_runtime::config::parse_resource_name;
use pipeline_runtime::error::{Classified, ErrorKind};
use pipeline_runtime::metrics::names::{
    self,
    dimension::{JOB, OUTCOME},
};
use pipeline_runtime::retry::{RetryError, RetryPolicy, retry};
use pipeline_runtime::{AwsArgs, ServiceArgs, ServiceContext};
use shard_consumer::LeaseTable;
use shard_consumer::args::default_worker_id;
use shard_consumer::singleton::SingletonLease;
use warehouse::config::WarehouseConfigError;
use warehouse::{Maintenance, Warehouse, WarehouseArgs, WarehouseError};

use jobs::{Job, Schedule};

pub const SERVICE: &str = "cron-connector";

fn schedule(text: &str) -> Result<Schedule, String> {
    Schedule::parse(text)
}

/// Settings of the cron-connector.
#[derive(Debug, Clone, Parser)]
#[command(name = SERVICE, version, about = "Scheduled warehouse maintenance, one instance at a time")]
pub struct Config {
    /// DynamoDB lease table holding the singleton lease (created if missing).
    #[arg(long = "cron-connector-lease-table", env = "CRON_CONNECTOR_LEASE_TABLE", default_value = "cron-connector", value_parser = parse_resource_name)]
    pub lease_table: String,

    /// When to VACUUM the events table (cron, UTC; 5 fields or 6 with seconds; `off`).
    #[arg(long, env = "CRON_VACUUM", default_value = "0 3 * * *", value_parser = schedule)]
    pub cron_vacuum: Schedule,

    /// When to ANALYZE the tables.
    #[arg(long, env = "CRON_ANALYZE", default_value = "30 3 * * *", value_parser = schedule)]
    pub cron_analyze: Schedule,

    /// When to forget loaded files older than LOADED_FILES_RETENTION_DAYS.
    #[arg(long, env = "CRON_PRUNE_LOADED_FILES", default_value = "0 4 * * *", value_parser = schedule)]
    pub cron_prune_loaded_files: Schedule,

    /// Days a loaded file is remembered: a pointer replayed later than this could load twice.
    #[arg(long, env = "LOADED_FILES_RETENTION_DAYS", default_value_t = 30,
          value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub loaded_files_retention_days: u32,

    /// When to delete events older than EVENTS_RETENTION_DAYS.
    #[arg(long, env = "CRON_RETENTION", default_value = "0 5 * * *", value_parser = schedule)]
    pub cron_retention: Schedule,

    /// Days events are kept (0: forever, the retention job does nothing).
    #[arg(long, env = "EVENTS_RETENTION_DAYS", default_value_t = 0)]
    pub events_retention_days: u32,

    /// Seconds the singleton lease may go unrenewed before another instance takes it.
    #[arg(long, env = "LEASE_FAILOVER_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(3..=600))]
    pub lease_failover_secs: u64,

    /// This instance's name in the lease table (default: host name, pid, random suffix).
    #[arg(long, env = "WORKER_ID")]
    pub worker_id: Option<String>,

    /// Create the lease table at start when it is missing (needs `dynamodb:CreateTable`);
    /// `false` where the templates create it: a missing table then stops the service.
    #[arg(long, env = "CREATE_LEASE_TABLES", default_value_t = true, action = clap::ArgAction::Set)]
    pub create_lease_tables: bool,

    #[command(flatten)]
    pub warehouse: WarehouseArgs,

    #[command(flatten)]
    pub service: ServiceArgs,

    #[command(flatten)]
    pub aws: AwsArgs,
}

impl Config {
    pub fn jobs(&self) -> Vec<Job> {
        let mut jobs = vec![
            Job {
                name: "vacuum",
                schedule: self.cron_vacuum.clone(),
                work: Maintenance::Vacuum,
            },
            Job {
                name: "analyze",
                schedule: self.cron_analyze.clone(),
                work: Maintenance::Analyze,
            },
            Job {
                name: "prune_loaded_files",
                schedule: self.cron_prune_loaded_files.clone(),
                work: Maintenance::PruneLoadedFiles {
                    days: self.loaded_files_retention_days,
                },
            },
        ];
        if self.events_retention_days > 0 {
            jobs.push(Job {
                name: "retention",
                schedule: self.cron_retention.clone(),
                work: Maintenance::Retention {
                    days: self.events_retention_days,
                },
            });
        }
        jobs
    }
}

/// Why the connector stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] WarehouseConfigError),
    /// The warehouse is not ready for maintenance (its schema, this user's rights) or
    /// did not answer at start.
    #[error("warehouse: {0}")]
    Warehouse(#[from] RetryError<WarehouseError>),
    #[error("maintenance job {job} cannot run: {error}")]
    Job { job: &'static str, error: WarehouseError },
    #[error("singleton lease: {0}")]
    Lease(#[from] shard_consumer::lease_table::LeaseTableError),
}

/// Runs one job and reports how it went. Only a fatal failure comes back: the
/// others are retried at the job's next time.
async fn run_job(warehouse: &Warehouse, job: &Job, context: &ServiceContext) -> Result<(), WarehouseError> {
    let started = std::time::Instant::now();
    let mut outcome = Ok(());
    for statement in job.work.statements(warehouse.dialect()) {
        if let Err(error) = warehouse.execute(&statement).await {
            outcome = Err(error);
            break;
        }
    }
    let elapsed = started.elapsed();
    let duration_ms = elapsed.as_millis() as u64;
    context.metrics.timing(names::JOB_DURATION, elapsed, &[(JOB, job.name)]);
    match outcome {
        Ok(()) => {
            context
                .metrics
                .count(names::JOB_RUNS, 1, &[(JOB, job.name), (OUTCOME, "success")]);
            tracing::info!(job = job.name, duration_ms, "job finished");
            Ok(())
        }
        Err(error) => {
            context
                .metrics
                .count(names::JOB_RUNS, 1, &[(JOB, job.name), (OUTCOME, "failure")]);
            // Over all jobs, for one alarm.
            context.metrics.count(names::JOB_FAILURES, 1, &[]);
            let kind = error.kind();
            if kind == ErrorKind::Fatal {
                tracing::error!(job = job.name, duration_ms, %kind, %error, "job failed; stopping");
                return Err(error);
            }
            tracing::error!(job = job.name, duration_ms, %kind, %error, "job failed; retried at its next time");
            Ok(())
        }
    }
}

/// Runs the connector until `context.shutdown` is cancelled.
pub async fn run(config: Config, context: ServiceContext) -> Result<(), Error> {
    let warehouse = config
        .warehouse
        .open(context.aws.s3(), || context.aws.redshift_data())?;
    // A warehouse still starting must not fail a deployment. The schema is `pipelinectl
    // setup`'s; a VACUUM this user may not run would do nothing, silently.
    let checked = retry(&RetryPolicy::START, &context.shutdown, || async {
        warehouse.check_schema().await?;
        warehouse.check_can_maintain().await
    })
    .await;
    match checked {
        Ok(_) => {}
        Err(error) if error.is_stopped() => return Ok(()),
        Err(error) => return Err(error.into()),
    }
    let jobs = config.jobs();
    let worker_id = config.worker_id.clone().unwrap_or_else(default_worker_id);
    let lease = SingletonLease::new(
        LeaseTable::new(context.aws.dynamodb(), &config.lease_table),
        "cron",
        &worker_id,
        Duration::from_secs(config.lease_failover_secs),
    )
    .creating_table(config.create_lease_tables);
    context.health.set_ready(true);
    tracing::info!(jobs = ?jobs.iter().map(|j| j.name).collect::<Vec<_>>(), %worker_id, "waiting for the singleton lease");
    let shutdown = context.shutdown.clone();
    while !shutdown.is_cancelled() {
        let Some(guard) = lease.acquire(&shutdown).await? else {
            break;
        };
        tracing::info!("holding the singleton lease; running jobs on schedule");
        let mut checked = Utc::now();
        loop {
            let now = Utc::now();
            let (due, next) = jobs::due(&jobs, &checked, &now);
            checked = now;
            for job in &due {
                if guard.lost.is_cancelled() || shutdown.is_cancelled() {
                    break;
                }
                if let Err(error) = run_job(&warehouse, job, &context).await {
                    guard.release().await;
                    return Err(Error::Job { job: job.name, error });
                }
            }
            let wait = next
                .and_then(|at| (at - Utc::now()).to_std().ok())
                .unwrap_or(Duration::from_secs(60))
                .min(Duration::from_secs(60));
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = guard.lost.cancelled() => {
                    tracing::warn!("singleton lease lost; another instance runs the jobs now");
                    break;
                }
                () = shutdown.cancelled() => {
                    guard.release().await;
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}
