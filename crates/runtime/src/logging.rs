//! Log output: JSON lines through `tracing` for CloudWatch Logs, text for a person at a terminal.

use std::io::IsTerminal;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

/// Failure to install the log subscriber.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("LOG_LEVEL is not a valid filter: {0}")]
    Filter(#[from] tracing_subscriber::filter::ParseError),
    #[error("a log subscriber is already installed")]
    AlreadyInstalled,
}

/// Installs the global subscriber writing to stdout.
///
/// JSON events are flattened (`{"timestamp":…,"level":…,"fields":…}` becomes one level of
/// keys) so CloudWatch Logs Insights can filter on them directly.
pub fn init(format: LogFormat, filter: &str) -> Result<(), LoggingError> {
    let filter: Targets = filter.parse()?;
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stdout().is_terminal(),
    };
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stdout)
        .with_target(true);
    let registry = tracing_subscriber::registry().with(filter);
    let result = if json {
        registry
            .with(
                layer
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false),
            )
            .try_init()
    } else {
        registry.with(layer).try_init()
    };
    result.map_err(|_| LoggingError::AlreadyInstalled)
}
