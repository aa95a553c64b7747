//! `SIM_LOG`: a run's story, stamped with simulated time.

/// Simulated time since the first log line.
struct SimulatedTime;

impl tracing_subscriber::fmt::time::FormatTime for SimulatedTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        static START: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();
        let at = START.get_or_init(tokio::time::Instant::now).elapsed();
        write!(w, "{:>10.3}", at.as_secs_f64())
    }
}

/// With `SIM_LOG` set (a `LOG_LEVEL`-style list such as
/// `shard_consumer=debug,consumer_sim=info`), logs to stderr in simulated time.
pub fn install_from_env() {
    let Ok(filter) = std::env::var("SIM_LOG") else {
        return;
    };
    let filter: tracing_subscriber::filter::Targets = match filter.parse() {
        Ok(filter) => filter,
        Err(error) => panic!("SIM_LOG={filter:?} is not a LOG_LEVEL-style list: {error}"),
    };
    use tracing_subscriber::layer::SubscriberExt;
    let subscriber = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_timer(SimulatedTime)
                .with_ansi(false)
                .with_writer(std::io::stderr),
        )
        .with(filter);
    let _ = tracing::subscriber::set_global_default(subscriber);
}
