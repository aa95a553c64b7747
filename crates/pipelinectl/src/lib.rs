//! The operator CLI of the pipeline.
//!
//! - [`setup`]: creates every resource the pipeline needs, idempotently, or verifies them;
//! - [`levels`]: live player counts per level;
//! - [`generate`]: telemetry onto the stream, random or replayed, or into a file;
//! - [`heatmap`]: where events happen on a level, from the warehouse;
//! - [`level_map`]: a picture of a generated level (a heat map's background);
//! - [`summary`]: what the pipeline holds end to end, checked against what was sent;
//! - [`dead_letters`]: the files the warehouse gave up on, listed and redriven;
//! - [`backfill`]: the lake's events of a time range loaded into the warehouse again;
//! - [`forget`]: players erased from the warehouse, PlayerState and the lake, with a receipt;
//! - [`serve`]: the live page, read-only: players per level, moves, heat maps, health;
//! - [`healthcheck`]: whether a service's process answers, for container health checks;
//! - [`aws`]: every AWS call of those commands but `setup`'s, one function per call.

pub mod aws;
pub mod backfill;
pub mod dead_letters;
pub mod forget;
pub mod generate;
pub mod healthcheck;
pub mod heatmap;
pub mod level_map;
pub mod levels;
pub mod picture;
pub mod progress;
pub mod reconcile;
pub mod serve;
pub mod setup;
pub mod summary;
pub mod when;

use clap::{Parser, Subcommand};
use pipeline_runtime::AwsArgs;
use pipeline_runtime::config::LogFormat;

/// The command line.
#[derive(Debug, Parser)]
#[command(name = "pipelinectl", version, about = "Operate the gaming analytics pipeline")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Log format: `auto` (text on a terminal, JSON lines otherwise), `json` or `text`.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "auto", global = true)]
    pub log_format: LogFormat,

    /// Log filter in `tracing` directive syntax.
    #[arg(long, env = "LOG_LEVEL", default_value = "info", global = true)]
    pub log_level: String,

    #[command(flatten)]
    pub aws: AwsArgs,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the streams, bucket and tables the pipeline needs (safe to run again).
    Setup(Box<setup::SetupArgs>),
    /// Put telemetry on the stream: a random game or a replayed file.
    Generate(generate::GenerateArgs),
    /// Show how many players are on each level right now (LevelState).
    Levels(levels::LevelsArgs),
    /// Check that LevelState equals the recount of PlayerState on every level (`--check`).
    ReconcileLevels(reconcile::ReconcileArgs),
    /// Draw where events of one type happen on a level, from the warehouse (PNG or CSV).
    Heatmap(Box<heatmap::HeatmapArgs>),
    /// Draw a generated level's picture (a heat map background).
    LevelMap(level_map::LevelMapArgs),
    /// Show what the pipeline holds; given what `generate` sent, wait for it and check it.
    Summary(Box<summary::SummaryArgs>),
    /// Serve the live page (read-only): players per level now, the busiest moves, a
    /// level's heat map, the pipeline's health. Binds loopback by default; for wider
    /// access put an authenticating reverse proxy in front (see --address).
    Serve(Box<serve::ServeArgs>),
    /// Exit 0 when a service's health endpoint answers 200 (the container's HEALTHCHECK).
    Healthcheck(healthcheck::HealthcheckArgs),
    /// List the files the redshift-connector gave up on, or redrive them once fixed.
    DeadLetters(dead_letters::DeadLettersArgs),
    /// Load the lake's events of a time range into the warehouse (exactly once, resumable).
    Backfill(Box<backfill::BackfillArgs>),
    /// Erase players from the warehouse, PlayerState and the lake; write a receipt.
    Forget(Box<forget::ForgetArgs>),
}
