//! `pipelinectl reconcile-levels`: LevelState brought back to the recount of
//! PlayerState while the player-state-worker runs, without ever counting a change twice.
//!
//! `--check` only reports, read-only and without leases ([`live_state::drift::check`]).
//! Without it, a correction is written only against a LevelState that is exactly the
//! count of the PlayerState recounted:
//!
//! 1. [`pause`]: PlayerState's writers are paused by lease (the events stage's shard
//!    leases and the pruner's singleton lease are taken, renewed, and released at the
//!    end), so PlayerState goes quiet; Kinesis keeps the events for after the release.
//! 2. Each round reads [`stream`]: per stream shard the level stage has not finished,
//!    its guard and the records after its checkpoint, read to the shard's end (or an
//!    open shard's tip). While any record is after both the guard and the checkpoint
//!    the level stage is behind: wait. Then recount PlayerState and read LevelState
//!    (strongly consistent), wait `RECONCILE_STREAM_LAG_MS`, and read the stream
//!    again: a new record means PlayerState changed during the recount, so the round
//!    starts over.
//! 3. Otherwise LevelState holds every change up to the guards, and the stream holds
//!    no change after them that the recount saw: the difference is drift, nothing
//!    else. [`correct`] writes it in transactions conditioned on each drifted level's
//!    count and each guard the level stage may still move (open shards') still holding
//!    what was read; if the level stage applied anything since, the transaction fails
//!    and the round starts over. More drifted levels than one transaction holds take
//!    several transactions, each exact on its own but not atomic together: a deadline
//!    or a signal between two leaves the correction partly applied (run it again).
//!
//! The pause only makes rounds succeed on a busy game; the exactness rests on the
//! guards and the stream, so a worker that writes one more batch before it notices its
//! lease is gone costs a round, never a double count. What it does assume: a PlayerState
//! write shows in its stream within `RECONCILE_STREAM_LAG_MS` (AWS gives no bound), and
//! no writer the pause does not stop (`pipelinectl forget`, a script) runs meanwhile
//! with a write that shows later than that.

pub mod correct;
pub mod pause;
pub mod stream;

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use clap::Args;
use live_state::drift::{self, CheckArgs, Drift};
use live_state::{Consistency, LeaseTableNames, TableNames, level_state, player_state};
use pipeline_runtime::{AwsClients, AwsError, RetryError, RetryPolicy, retry};
use shard_consumer::LeaseTable;
use shard_consumer::args::default_worker_id;
use shard_consumer::dynamodb_streams::DynamoDbStreamSource;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use correct::WriteError;
use pause::{Pause, PauseError};
use stream::StreamError;

pub use live_state::drift::render;

/// What `reconcile-levels` compares, how it corrects, and how patiently.
#[derive(Debug, Clone, Args)]
pub struct ReconcileArgs {
    #[command(flatten)]
    pub tables: TableNames,

    /// The worker's lease tables: the events stage's and the pruner's leases are taken
    /// for the pause; the level stage's checkpoints say where it is in PlayerState's stream.
    #[command(flatten)]
    pub lease_tables: LeaseTableNames,

    /// Only report the drift (exit 1 when there is some): read-only, no lease taken.
    /// Without it the drift is corrected (see RECONCILE_DRY_RUN).
    #[arg(long, env = "RECONCILE_CHECK", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub check: bool,

    /// How `--check` reads the drift.
    #[command(flatten)]
    pub drift_check: CheckArgs,

    /// Do everything a correction does (pause, wait, recount) but write nothing: print
    /// the updates it would make.
    #[arg(long, env = "RECONCILE_DRY_RUN", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub dry_run: bool,

    /// Seconds the whole correction may take, pause included (taking the leases,
    /// waiting for the level stage and for a quiet PlayerState); past it the leases are
    /// released and the command fails.
    #[arg(long, env = "RECONCILE_TIMEOUT_SECS", default_value_t = 120,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout_secs: u64,

    /// Milliseconds between two renewals of the paused leases: well under the
    /// workers' LEASE_FAILOVER_SECS, after which they take a still lease back.
    #[arg(long, env = "RECONCILE_RENEW_INTERVAL_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(100..=60_000))]
    pub renew_interval_ms: u64,

    /// Milliseconds between two looks at the level stage while waiting for it (each reads
    /// every shard of PlayerState's stream once).
    #[arg(long, env = "RECONCILE_POLL_INTERVAL_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub poll_interval_ms: u64,

    /// Milliseconds a PlayerState write may take to show in its stream: the stream is
    /// read again this long after the recount to see that nothing changed during it.
    #[arg(long, env = "RECONCILE_STREAM_LAG_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub stream_lag_ms: u64,
}

/// Why a correction failed. The leases are released whatever the error.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("{}", .0.explain())]
    Aws(#[from] AwsError),
    #[error("pause: {0}")]
    Pause(#[from] PauseError),
    #[error("{0}")]
    Stream(#[from] StreamError),
    #[error("writing the corrections: {0}")]
    Write(WriteError),
    #[error(
        "no correction within RECONCILE_TIMEOUT_SECS={secs}, still waiting for {waiting_for} (levels printed as corrected above stay corrected; run again to finish)"
    )]
    Timeout { secs: u64, waiting_for: String },
    #[error(
        "interrupted (SIGTERM or Ctrl-C): the leases were released; each transaction landed whole or not at all, but a correction of several may be partly written (the levels printed above were): run again to finish (--check tells)"
    )]
    Interrupted,
}

/// What the correction waits for (shared with the deadline's message), and what it
/// wrote; a poisoned lock's value is used as it is (at worst a report misses a level).
fn lock<T>(value: &Mutex<T>) -> MutexGuard<'_, T> {
    value.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The drift reported by `--check`; a throttled or passing failure of a read is tried
/// again until `shutdown`.
pub async fn check(
    dynamodb: &aws_sdk_dynamodb::Client,
    args: &ReconcileArgs,
    shutdown: &CancellationToken,
) -> Result<Vec<Drift>, AwsError> {
    drift::check(
        dynamodb,
        &args.tables.player_state_table,
        &args.tables.level_state_table,
        args.drift_check.settings(),
        &RetryPolicy::COMMAND,
        shutdown,
    )
    .await
}

/// What a correction did.
#[derive(Debug, Clone)]
pub struct Corrected {
    /// The drift found, level by level: as written (over every round that wrote), or in
    /// a dry run or with nothing to correct, as found.
    pub drift: Vec<Drift>,
    pub written: bool,
    /// How long PlayerState's writers were paused.
    pub paused: Duration,
    /// Rounds needed (a round restarts when PlayerState or LevelState moved under it).
    pub rounds: u32,
    /// Leases taken for the pause.
    pub leases: usize,
}

/// Corrects the drift: pauses PlayerState's writers, writes the corrections when the
/// level stage has caught up and PlayerState is quiet, releases the leases (also on an
/// error, at the deadline and at `shutdown`). `on_commit` hears of each transaction's
/// corrections as it commits (a correction may take several).
pub async fn correct(
    aws: &AwsClients,
    args: &ReconcileArgs,
    shutdown: CancellationToken,
    on_commit: &(dyn Fn(&[Drift]) + Send + Sync),
) -> Result<Corrected, ReconcileError> {
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let owner = format!("reconcile-levels:{}", default_worker_id());
    let dynamodb = aws.dynamodb();
    let source =
        DynamoDbStreamSource::for_table(&dynamodb, aws.dynamodb_streams(), &args.tables.player_state_table).await?;
    let pause = Pause::new(&owner, Duration::from_millis(args.renew_interval_ms));
    let started = std::time::Instant::now();
    let waiting_for = Mutex::new(String::from("the leases"));
    let outcome = tokio::select! {
        outcome = tokio::time::timeout_at(deadline, paused_work(aws, args, &pause, &source, deadline, &waiting_for, on_commit)) => {
            outcome.unwrap_or_else(|_| Err(ReconcileError::Timeout {
                secs: args.timeout_secs,
                waiting_for: lock(&waiting_for).clone(),
            }))
        }
        () = shutdown.cancelled() => Err(ReconcileError::Interrupted),
    };
    let leases = pause.held().len();
    let released = pause.release().await;
    let paused = started.elapsed();
    tracing::info!(
        leases,
        released,
        paused_ms = paused.as_millis() as u64,
        "leases released"
    );
    outcome.map(|(drift, written, rounds)| Corrected {
        drift,
        written,
        paused,
        rounds,
        leases,
    })
}

/// Everything done under the pause: the drift, whether it was written, and the rounds.
async fn paused_work(
    aws: &AwsClients,
    args: &ReconcileArgs,
    pause: &Pause,
    source: &DynamoDbStreamSource,
    deadline: Instant,
    waiting_for: &Mutex<String>,
    on_commit: &(dyn Fn(&[Drift]) + Send + Sync),
) -> Result<(Vec<Drift>, bool, u32), ReconcileError> {
    let dynamodb = aws.dynamodb();
    let events = LeaseTable::new(dynamodb.clone(), &args.lease_tables.player_state_lease_table);
    let pruner = LeaseTable::new(dynamodb.clone(), &args.lease_tables.pruner_lease_table);
    let levels_leases = LeaseTable::new(dynamodb.clone(), &args.lease_tables.level_state_lease_table);
    let shards = pause.take_shards(&events, deadline).await?;
    pause
        .take_singleton(&pruner, live_state::PRUNER_LEASE_KEY, deadline)
        .await?;
    tracing::info!(events_shards = shards, "events stage and pruner paused");
    let poll = Duration::from_millis(args.poll_interval_ms);
    // Throttled and passing failures are tried again; the deadline bounds it all, and a
    // signal drops this whole future.
    let never = CancellationToken::new();
    let view = || async {
        retry(&RetryPolicy::COMMAND, &never, || {
            stream::read_view(source, &dynamodb, &levels_leases, &args.tables.transitions_table)
        })
        .await
        .map_err(RetryError::into_error)
    };
    // Every level a committed transaction set, over all rounds: the first count read,
    // the last target written.
    let written: Mutex<BTreeMap<String, Drift>> = Mutex::default();
    let mut rounds = 0;
    loop {
        rounds += 1;
        let before = view().await?;
        if before.pending() > 0 || before.unresolved() > 0 {
            *lock(waiting_for) = if before.pending() > 0 {
                format!(
                    "the level stage to apply {} more records of PlayerState's stream",
                    before.pending()
                )
            } else {
                format!(
                    "{} stream shards to be read to their end (past {} GetRecords pages each)",
                    before.unresolved(),
                    stream::MAX_PAGES_PER_SHARD
                )
            };
            tokio::time::sleep(poll).await;
            continue;
        }
        let recount = retry(&RetryPolicy::COMMAND, &never, || {
            player_state::count_by_level_read(&dynamodb, &args.tables.player_state_table, Consistency::Strong)
        })
        .await
        .map_err(RetryError::into_error)?;
        let levels = retry(&RetryPolicy::COMMAND, &never, || {
            level_state::read_every_count(&dynamodb, &args.tables.level_state_table, Consistency::Strong)
        })
        .await
        .map_err(RetryError::into_error)?;
        tokio::time::sleep(Duration::from_millis(args.stream_lag_ms)).await;
        let after = view().await?;
        if !before.same_ends(&after) {
            *lock(waiting_for) = "PlayerState to stay unchanged through a recount".to_string();
            tracing::info!(round = rounds, "PlayerState changed during the recount; again");
            tokio::time::sleep(poll).await;
            continue;
        }
        let found = drift::drift(&levels, &recount);
        if args.dry_run {
            return Ok((found, false, rounds));
        }
        if found.is_empty() {
            let earlier: Vec<Drift> = lock(&written).values().cloned().collect();
            let any = !earlier.is_empty();
            return Ok((if any { earlier } else { found }, any, rounds));
        }
        let committed = |chunk: &[Drift]| {
            let mut written = lock(&written);
            for d in chunk {
                written
                    .entry(d.level_id.clone())
                    .and_modify(|w| w.player_state = d.player_state)
                    .or_insert_with(|| d.clone());
            }
            on_commit(chunk);
        };
        let outcome = correct::write(
            &dynamodb,
            &args.tables.level_state_table,
            &args.tables.transitions_table,
            &before.guards(),
            &found,
            &committed,
        )
        .await;
        match outcome {
            Ok(()) => return Ok((lock(&written).values().cloned().collect(), true, rounds)),
            Err(WriteError::Moved) => {
                *lock(waiting_for) = "LevelState to stay unchanged until the corrections are written".to_string();
                tracing::info!(round = rounds, "LevelState moved before the corrections landed; again");
                tokio::time::sleep(poll).await;
            }
            Err(error) => return Err(ReconcileError::Write(error)),
        }
    }
}

/// What `reconcile-levels` prints after a correction: the drift as corrected (or, in a
/// dry run, the updates it would make), then one line on the pause.
pub fn report(corrected: &Corrected, dry_run: bool) -> String {
    let summary = drift::summary(&corrected.drift);
    let mut out = if dry_run && !corrected.drift.is_empty() {
        correct::render(&corrected.drift, "would set")
    } else {
        render(&corrected.drift)
    };
    out.push('\n');
    let verb = if corrected.written {
        "corrected"
    } else if dry_run {
        "dry run, nothing written:"
    } else {
        "nothing to correct:"
    };
    out.push_str(&format!(
        "{verb} {} levels, {} players miscounted; events stage and pruner paused {} ms ({} leases, {} rounds)\n",
        summary.levels,
        summary.players,
        corrected.paused.as_millis(),
        corrected.leases,
        corrected.rounds
    ));
    out
}
