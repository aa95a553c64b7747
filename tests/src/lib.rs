//! Helpers for tests that run against the local AWS stack (`deploy/local/up`).
//!
//! - [`stack`]: where the emulators are, clients for them, uniquely named resources;
//! - [`resources`]: a uniquely named set of every pipeline resource, created by setup's code;
//! - [`process`]: a service binary run as a child process, observed through its
//!   health endpoint and JSON logs, stopped with a real SIGTERM;
//! - [`service_checks`]: start, health, SIGTERM and config-error checks every service passes;
//! - [`help`]: checks that a binary's `--help` documents every setting;
//! - [`sources`]: the workspace's own source files, for checks on the code;
//! - [`fault_proxy`]: a loopback proxy that fails a share of the AWS calls through it;
//! - [`iam_moto`]: a private moto that enforces IAM, and principals with exactly a policy;
//! - [`cfn_render`]: CloudFormation templates rendered as they would deploy, without AWS;
//! - [`cloudwatch`]: what CloudWatch accepts of a dashboard body and an alarm;
//! - [`chaos`]: the whole pipeline under kills, resharding and faults, then its invariants;
//! - [`wait`]: a bounded wait for a condition on the stack.

pub mod cfn_render;
pub mod chaos;
pub mod cloudwatch;
pub mod fault_proxy;
pub mod help;
pub mod iam_moto;
pub mod process;
pub mod resources;
pub mod service_checks;
pub mod sources;
pub mod stack;
pub mod wait;
