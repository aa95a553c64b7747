//! Settings shared by every binary, and parsing that names the env var behind a bad value.
//!
//! Every setting is a clap argument with both `long` and `env`, so `--help` lists
//! the flag, the variable and the default in one place.

use std::ffi::OsString;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Args, Parser, ValueEnum};

/// Parses the process arguments and environment into `T`, exiting with a message
/// that names the offending flag or env var when a value is bad.
pub fn parse<T: Parser>() -> T {
    match try_parse_from::<T, _, _>(std::env::args_os()) {
        Ok(config) => config,
        Err(error) => error.exit(),
    }
}

/// Like [`parse`], from explicit arguments (the environment is still read).
pub fn try_parse_from<T, I, A>(args: I) -> Result<T, clap::Error>
where
    T: Parser,
    I: IntoIterator<Item = A>,
    A: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    T::try_parse_from(&args).map_err(|error| name_env_var(error, &T::command(), &args))
}

/// clap reports a bad env value as if it were the flag; a user who set only the
/// variable deserves to read the variable's name.
fn name_env_var(error: clap::Error, command: &clap::Command, args: &[OsString]) -> clap::Error {
    if !matches!(error.kind(), ErrorKind::InvalidValue | ErrorKind::ValueValidation) {
        return error;
    }
    let Some(ContextValue::String(invalid_arg)) = error.get(ContextKind::InvalidArg) else {
        return error;
    };
    let flag = invalid_arg.split_whitespace().next().unwrap_or_default();
    let Some(arg) = command
        .get_arguments()
        .find(|arg| arg.get_long().is_some_and(|long| format!("--{long}") == flag))
    else {
        return error;
    };
    let Some(env) = arg.get_env() else {
        return error;
    };
    let given_on_command_line = args.iter().any(|a| {
        let a = a.to_string_lossy();
        a == flag || a.starts_with(&format!("{flag}="))
    });
    if given_on_command_line || std::env::var_os(env).is_none() {
        return error;
    }
    let value = match error.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(value)) => value.clone(),
        _ => std::env::var(env).unwrap_or_default(),
    };
    let reason = error
        .to_string()
        .lines()
        .next()
        .and_then(|line| line.rsplit_once("': "))
        .map(|(_, reason)| reason.to_string())
        .unwrap_or_else(|| "invalid value".to_string());
    let mut command = command.clone();
    command.error(
        ErrorKind::ValueValidation,
        format!(
            "environment variable {} has an invalid value {value:?} (for {flag}): {reason}",
            env.to_string_lossy()
        ),
    )
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Text when stdout is a terminal, JSON otherwise.
    Auto,
    /// One JSON object per line (what CloudWatch Logs wants).
    Json,
    /// Human-readable lines.
    Text,
}

/// Settings every long-running service has.
#[derive(Debug, Clone, Args)]
pub struct ServiceArgs {
    /// Log format: `auto` (text on a terminal, JSON lines otherwise), `json` or `text`.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "auto")]
    pub log_format: LogFormat,

    /// Log filter: a level, then `target=level` pairs, for example `info` or `info,shard_consumer=debug`.
    #[arg(long, env = "LOG_LEVEL", default_value = "info", value_parser = parse_log_filter)]
    pub log_level: String,

    /// CloudWatch namespace of the metrics written to stdout in Embedded Metric Format.
    #[arg(long, env = "METRICS_NAMESPACE", default_value = "GamingAnalytics", value_parser = parse_namespace)]
    pub metrics_namespace: String,

    /// Seconds between two metric flushes to stdout (1..=3600).
    #[arg(long, env = "METRICS_FLUSH_INTERVAL_SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub metrics_flush_interval_secs: u64,

    /// Address of the health endpoint (`GET /healthz`, `GET /readyz`); port 0 picks a free port.
    #[arg(long, env = "HEALTH_ADDR", default_value = "0.0.0.0:8080")]
    pub health_addr: std::net::SocketAddr,

    /// Seconds the service has after SIGTERM to flush and release its leases before it
    /// exits without checkpointing (set the ECS `stopTimeout` above this).
    #[arg(long, env = "SHUTDOWN_DEADLINE_SECS", default_value_t = 25,
          value_parser = clap::value_parser!(u64).range(1..=600))]
    pub shutdown_deadline_secs: u64,
}

/// How far ahead of its arrival an event's time may be: a setting of every service
/// that validates telemetry, which must agree on it.
#[derive(Debug, Clone, Args)]
pub struct FutureWindowArgs {
    /// Seconds an event's timestamp may be ahead of its arrival (client clock skew) before it is rejected.
    #[arg(long, env = "FUTURE_WINDOW_SECS", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(0..=604_800))]
    pub future_window_secs: u64,
}

impl FutureWindowArgs {
    pub fn millis(&self) -> i64 {
        i64::try_from(self.future_window_secs * 1000).unwrap_or(i64::MAX)
    }
}

/// The bounds of an event's `event_data`: settings of every service that validates
/// telemetry, which must agree on them.
#[derive(Debug, Clone, Args)]
pub struct EventDataArgs {
    /// Most bytes of JSON an event's `event_data` object may hold (larger: rejected as
    /// event_data_too_large). Keep it under MAX_EVENT_BYTES.
    #[arg(long, env = "MAX_EVENT_DATA_BYTES", default_value_t = 16_384,
          value_parser = clap::value_parser!(u64).range(2..=1_048_576))]
    pub max_event_data_bytes: u64,

    /// Deepest an event's `event_data` may nest, the object itself being level 1
    /// (deeper: rejected as event_data_too_deep).
    #[arg(long, env = "MAX_EVENT_DATA_DEPTH", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub max_event_data_depth: u32,
}

impl EventDataArgs {
    pub fn max_bytes(&self) -> usize {
        usize::try_from(self.max_event_data_bytes).unwrap_or(usize::MAX)
    }

    pub fn max_depth(&self) -> usize {
        usize::try_from(self.max_event_data_depth).unwrap_or(usize::MAX)
    }
}

fn parse_log_filter(value: &str) -> Result<String, String> {
    value
        .parse::<tracing_subscriber::filter::Targets>()
        .map(|_| value.to_string())
        .map_err(|e| e.to_string())
}

fn parse_namespace(value: &str) -> Result<String, String> {
    crate::metrics::validate_namespace(value).map(|()| value.to_string())
}

/// Parses a non-empty resource name (stream, table, bucket), trimming nothing.
pub fn parse_resource_name(value: &str) -> Result<String, String> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain whitespace or control characters".into());
    }
    Ok(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Parser)]
    struct TestConfig {
        #[command(flatten)]
        service: ServiceArgs,
        /// A number only this test reads.
        #[arg(long, env = "PIPELINE_RUNTIME_TEST_BATCH_RECORDS", default_value_t = 10)]
        batch_records: u32,
    }

    #[test]
    fn defaults_parse() {
        let config: TestConfig = try_parse_from(["x"]).expect("defaults are valid");
        assert_eq!(config.service.metrics_flush_interval_secs, 60);
        assert_eq!(config.service.log_format, LogFormat::Auto);
    }

    #[test]
    fn bad_flag_value_names_the_flag() {
        let error = try_parse_from::<TestConfig, _, _>(["x", "--metrics-flush-interval-secs", "0"])
            .expect_err("0 is out of range");
        assert!(error.to_string().contains("--metrics-flush-interval-secs"), "{error}");
    }

    #[test]
    fn resource_names_reject_blank() {
        assert!(parse_resource_name("").is_err());
        assert!(parse_resource_name("a b").is_err());
        assert_eq!(parse_resource_name("telemetry"), Ok("telemetry".to_string()));
    }
}
