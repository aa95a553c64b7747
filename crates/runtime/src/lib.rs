//! What every service of the pipeline shares.
//!
//! - [`config`]: settings from env vars and `--flags`, with errors that name the variable;
//! - [`aws`]: AWS SDK clients built in one place, with per-service endpoint overrides;
//! - [`error`]: what a failure means (throttled, transient, condition failed,
//!   permanent for this input, fatal for this process), decided once for every call;
//! - [`retry`]: the one retry layer, with named policies; [`backoff`] its delays;
//! - [`logging`]: JSON lines through `tracing` (text on a terminal);
//! - [`metrics`]: CloudWatch Embedded Metric Format on stdout;
//! - [`s3`]: writing the lake's objects (one PutObject for every service);
//! - [`schemas`]: the game's JSON Schemas (`EVENT_SCHEMAS`), read once at start;
//! - [`shutdown`]: SIGTERM / SIGINT cancel a `CancellationToken`;
//! - [`health`]: `/healthz` and `/readyz` for ECS and Elastic Beanstalk;
//! - [`service`]: the wiring of all of the above around a service's `run`.

pub mod aws;
pub mod backoff;
pub mod clock;
pub mod config;
pub mod error;
pub mod health;
pub mod logging;
pub mod metrics;
pub mod resources;
pub mod retry;
pub mod s3;
pub mod schemas;
pub mod service;
pub mod shutdown;

pub use aws::{AwsArgs, AwsClients};
pub use config::ServiceArgs;
pub use error::{AwsError, Classified, ErrorKind};
pub use health::Health;
pub use metrics::{Metrics, Unit};
pub use retry::{RetryError, RetryPolicy, retry};
pub use service::ServiceContext;
