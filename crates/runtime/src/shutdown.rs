//! SIGTERM and SIGINT cancel a token that is handed to `run`.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Error installing the signal handlers.
#[derive(Debug, thiserror::Error)]
#[error("cannot install signal handlers: {0}")]
pub struct SignalError(#[from] std::io::Error);

/// Returns a token cancelled at the first SIGTERM or SIGINT.
///
/// A second signal exits at once with status 130: an operator who presses Ctrl-C
/// twice wants the process gone, flush or not. Work not checkpointed is read again
/// by the next owner of the lease, so nothing is lost by this.
pub fn on_signals() -> Result<CancellationToken, SignalError> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "shutdown requested");
        cancel.cancel();
        let name = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        tracing::warn!(signal = name, "second signal: exiting without waiting for the flush");
        std::process::exit(130);
    });
    Ok(token)
}
