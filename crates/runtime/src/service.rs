//! The wiring every service binary shares: logs, signals, metrics, health, AWS
//! clients, and a deadline on the way out.

use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::aws::{AwsArgs, AwsClients};
use crate::config::ServiceArgs;
use crate::health::{self, Health};
use crate::metrics::Metrics;
use crate::{logging, shutdown};

/// What a service's `run` is handed.
#[derive(Debug, Clone)]
pub struct ServiceContext {
    /// The service's name, also the `Service` dimension of its metrics.
    pub name: &'static str,
    /// Cancelled on SIGTERM or SIGINT: flush, checkpoint, release leases, return.
    pub shutdown: CancellationToken,
    pub metrics: Metrics,
    /// Set ready once the service is doing its work.
    pub health: Health,
    pub aws: AwsClients,
}

/// A service about to start.
pub struct Service<'a> {
    name: &'static str,
    args: &'a ServiceArgs,
    aws: &'a AwsArgs,
    routes: Option<RoutesFn<'a>>,
}

/// Builds a service's own HTTP routes once its AWS clients exist.
type RoutesFn<'a> = Box<dyn FnOnce(&AwsClients) -> axum::Router + 'a>;

/// Exit status when configuration or startup fails (clap uses 2 for bad arguments too).
const EXIT_STARTUP: u8 = 2;

impl<'a> Service<'a> {
    pub fn new(name: &'static str, args: &'a ServiceArgs, aws: &'a AwsArgs) -> Self {
        Self {
            name,
            args,
            aws,
            routes: None,
        }
    }

    /// Serves `routes` (built from the AWS clients) beside `/healthz` and `/readyz`.
    pub fn with_routes(mut self, routes: impl FnOnce(&AwsClients) -> axum::Router + 'a) -> Self {
        self.routes = Some(Box::new(routes));
        self
    }

    /// Starts logging, signal handling, metrics and the health endpoint, then runs
    /// `work` until it returns. After a shutdown signal `work` has
    /// `SHUTDOWN_DEADLINE_SECS` to return; past that the process exits with status 1
    /// without waiting (leases then expire after the failover time).
    pub async fn run<F, Fut, E>(mut self, work: F) -> ExitCode
    where
        F: FnOnce(ServiceContext) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        if let Err(error) = logging::init(self.args.log_format, &self.args.log_level) {
            eprintln!("{}: {error}", self.name);
            return ExitCode::from(EXIT_STARTUP);
        }
        let shutdown = match shutdown::on_signals() {
            Ok(token) => token,
            Err(error) => {
                tracing::error!(%error, "startup failed");
                return ExitCode::from(EXIT_STARTUP);
            }
        };
        let aws = match AwsClients::load(self.aws).await {
            Ok(aws) => aws,
            Err(error) => {
                tracing::error!(%error, "startup failed");
                return ExitCode::from(EXIT_STARTUP);
            }
        };
        let metrics = Metrics::new(&self.args.metrics_namespace, self.name);
        // A heartbeat: an alarm on its absence catches a service that is not running at all.
        metrics.gauge(crate::metrics::names::UP, 1.0, crate::metrics::Unit::Count, &[]);
        let health = Health::default();
        // The endpoint outlives the work by a little so /readyz reports the drain.
        let server_shutdown = CancellationToken::new();
        let routes = self.routes.take().map(|build| build(&aws)).unwrap_or_default();
        let server = match health::serve(self.args.health_addr, health.clone(), routes, server_shutdown.clone()).await {
            Ok(server) => server,
            Err(error) => {
                tracing::error!(%error, "startup failed");
                return ExitCode::from(EXIT_STARTUP);
            }
        };
        let flusher_shutdown = CancellationToken::new();
        let flusher = metrics.spawn_flusher(
            Duration::from_secs(self.args.metrics_flush_interval_secs),
            flusher_shutdown.clone(),
        );
        tracing::info!(
            service = self.name,
            version = env!("CARGO_PKG_VERSION"),
            health_addr = %server.local_addr,
            region = aws.region(),
            "service started"
        );

        let context = ServiceContext {
            name: self.name,
            shutdown: shutdown.clone(),
            metrics: metrics.clone(),
            health: health.clone(),
            aws,
        };
        let deadline = Duration::from_secs(self.args.shutdown_deadline_secs);
        let work = work(context);
        tokio::pin!(work);
        let watch_shutdown = shutdown.clone();
        let health_on_shutdown = health.clone();
        let outcome = tokio::select! {
            result = &mut work => Some(result),
            () = async move {
                watch_shutdown.cancelled().await;
                health_on_shutdown.set_ready(false);
                tokio::time::sleep(deadline).await;
            } => None,
        };
        health.set_ready(false);
        shutdown.cancel();
        let status = match outcome {
            Some(Ok(())) => {
                tracing::info!(service = self.name, "service stopped");
                ExitCode::SUCCESS
            }
            Some(Err(error)) => {
                tracing::error!(service = self.name, %error, "service failed");
                ExitCode::FAILURE
            }
            None => {
                tracing::error!(
                    service = self.name,
                    deadline_secs = deadline.as_secs(),
                    "shutdown deadline passed: exiting without a final checkpoint"
                );
                ExitCode::FAILURE
            }
        };
        flusher_shutdown.cancel();
        server_shutdown.cancel();
        let _ = flusher.await;
        let _ = tokio::time::timeout(Duration::from_secs(2), server.task).await;
        status
    }
}
