//! What every service of the pipeline shares.
//!
//! - [`config`]: settings from env vars and `--flags`, with errors that name the variable;
//! - [`aws`]: AWS SDK clients built in one place, with per-service endpoint overrides;
//! - [`backoff`]: exponential backoff with jitter, for every retry loop;
//! - [`logging`]: JSON lines through `tracing` (text on a terminal);
//! - [`metrics`]: CloudWatch Embedded Metric Format on stdout;
//! - [`shutdown`]: SIGTERM / SIGINT cancel a `CancellationToken`;
//! - [`health`]: `/healthz` and `/readyz` for ECS and Elastic Beanstalk;
//! - [`service`]: the wiring of all of the above around a service's `run`.

pub mod aws;
pub mod backoff;
pub mod clock;
pub mod config;
pub mod health;
pub mod logging;
pub mod metrics;
pub mod resources;
pub mod service;
pub mod shutdown;

pub use aws::{AwsArgs, AwsClients};
pub use config::ServiceArgs;
pub use health::Health;
pub use metrics::{Metrics, Unit};
pub use service::ServiceContext;
