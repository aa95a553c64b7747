//! cron-connector: warehouse maintenance on cron schedules (VACUUM, ANALYZE, pruning
//! of `loaded_files`, retention), and the check that LevelState is still the recount
//! of PlayerState (its drift published as metrics, for an alarm), run by one instance
//! at a time under a singleton lease. Each job's statements run outside transactions. A failure that may pass (a
//! lock, a dropped connection, a server restarting) or that belongs to the data is
//! logged and counted and retried at the job's next time; a fatal one of a warehouse
//! job (permissions, a missing table, a refused login) stops the service with its
//! message, since no later run can succeed until someone fixes it. The level-drift
//! check only reads live state: a fatal failure of it (a denied Scan, a missing table)
//! is logged naming its cause and counted as a job failure (`JobFailures`), and the
//! warehouse jobs keep running.

pub mod config;
pub mod jobs;

use std::time::Duration;

use chrono::Utc;
use live_state::drift;
use pipeline_runtime::error::{AwsError, Classified, ErrorKind};
use pipeline_runtime::metrics::names::{
    self,
    dimension::{JOB, OUTCOME},
};
use pipeline_runtime::retry::{RetryError, RetryPolicy, retry};
use pipeline_runtime::{ServiceContext, Unit};
use shard_consumer::LeaseTable;
use shard_consumer::args::default_worker_id;
use shard_consumer::singleton::SingletonGuard;
use shard_consumer::singleton::SingletonLease;
use warehouse::config::WarehouseConfigError;
use warehouse::{Warehouse, WarehouseError};

pub use config::Config;
use jobs::{Job, Work};

pub const SERVICE: &str = "cron-connector";

/// The IAM actions of every AWS call this service makes, by the module that makes
/// it; `infra/roles.json` grants their union (checked by `tests/tests/iam.rs`).
pub const AWS_ACTIONS: &[&[&str]] = &[
    warehouse::redshift_data::IAM_ACTIONS,
    shard_consumer::lease_table::IAM_ACTIONS,
    live_state::IAM_ACTIONS,
];

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
    Job { job: &'static str, error: JobError },
    #[error("singleton lease: {0}")]
    Lease(#[from] shard_consumer::lease_table::LeaseTableError),
}

/// Why a job failed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Warehouse(#[from] WarehouseError),
    #[error("{}", .0.explain())]
    LiveState(#[from] AwsError),
}

impl Classified for JobError {
    fn kind(&self) -> ErrorKind {
        match self {
            JobError::Warehouse(error) => error.kind(),
            JobError::LiveState(error) => error.kind,
        }
    }
}

/// Retries of a throttled or passing failure of a level-drift read within one run: the
/// job runs every 15 minutes by default, so a minute is patient enough; past it the
/// run counts as failed and the next one tries again.
const LEVEL_DRIFT_READS: RetryPolicy = RetryPolicy::CONTROL_READ.giving_up_after(Duration::from_secs(60));

/// Does a job's work.
async fn work(warehouse: &Warehouse, job: &Job, context: &ServiceContext) -> Result<(), JobError> {
    match &job.work {
        Work::Warehouse(maintenance) => {
            for statement in maintenance.statements(warehouse.dialect()) {
                warehouse.execute(&statement).await?;
            }
        }
        Work::LevelDrift {
            player_state_table,
            level_state_table,
            settings,
        } => {
            let found = drift::check(
                &context.aws.dynamodb(),
                player_state_table,
                level_state_table,
                *settings,
                &LEVEL_DRIFT_READS,
                &context.shutdown,
            )
            .await?;
            let summary = drift::summary(&found);
            // Every run, zeros included: LevelDriftAlarm (2 of 3 runs) goes back to OK
            // after two runs without drift, and a missing run is no evidence either way.
            context
                .metrics
                .gauge(names::LEVEL_DRIFT_PLAYERS, summary.players as f64, Unit::Count, &[]);
            context
                .metrics
                .gauge(names::LEVEL_DRIFT_LEVELS, summary.levels as f64, Unit::Count, &[]);
            if !found.is_empty() {
                tracing::warn!(
                    levels = summary.levels,
                    players = summary.players,
                    drift = %drift::render(&found),
                    "LevelState is not the recount of PlayerState: run pipelinectl reconcile-levels"
                );
            }
        }
    }
    Ok(())
}

/// Runs one job and reports how it went. Only a fatal failure comes back: the
/// others are retried at the job's next time.
async fn run_job(warehouse: &Warehouse, job: &Job, context: &ServiceContext) -> Result<(), JobError> {
    let started = std::time::Instant::now();
    let outcome = work(warehouse, job, context).await;
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
            if kind == ErrorKind::Fatal && job.work.fatal_stops_service() {
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
    let Some(warehouse) = connect(&config, &context).await? else {
        return Ok(());
    };
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
    let shutdown = &context.shutdown;
    while !shutdown.is_cancelled() {
        let Some(guard) = lease.acquire(shutdown).await? else {
            break;
        };
        tracing::info!("holding the singleton lease; running jobs on schedule");
        run_while_held(guard, &warehouse, &jobs, &context).await?;
    }
    Ok(())
}

/// The warehouse, once it answers and is ready for maintenance; `None` if shutdown
/// came first. A warehouse still starting must not fail a deployment. The schema is
/// `pipelinectl setup`'s; a VACUUM this user may not run would do nothing, silently.
async fn connect(config: &Config, context: &ServiceContext) -> Result<Option<Warehouse>, Error> {
    let warehouse = config
        .warehouse
        .open(context.aws.s3(), || context.aws.redshift_data())?;
    let checked = retry(&RetryPolicy::START, &context.shutdown, || async {
        warehouse.check_schema().await?;
        warehouse.check_can_maintain().await
    })
    .await;
    match checked {
        Ok(_) => Ok(Some(warehouse)),
        Err(error) if error.is_stopped() => Ok(None),
        Err(error) => Err(error.into()),
    }
}

/// Runs the jobs on schedule while `guard` holds the lease: until the lease is lost
/// (returns, to wait for it again), shutdown (releases it) or a fatal job failure
/// (releases it and returns the error).
async fn run_while_held(
    guard: SingletonGuard,
    warehouse: &Warehouse,
    jobs: &[Job],
    context: &ServiceContext,
) -> Result<(), Error> {
    let shutdown = &context.shutdown;
    let mut checked = Utc::now();
    loop {
        let now = Utc::now();
        let (due, next) = jobs::due(jobs, &checked, &now);
        checked = now;
        for job in &due {
            if guard.lost.is_cancelled() || shutdown.is_cancelled() {
                break;
            }
            if let Err(error) = run_job(warehouse, job, context).await {
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
                return Ok(());
            }
            () = shutdown.cancelled() => {
                guard.release().await;
                return Ok(());
            }
        }
    }
}
