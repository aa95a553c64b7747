//! Two instances of each service, killed with SIGKILL and started again at will.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::process::{ServiceProcess, workspace_binary};

/// The services of the pipeline, each run twice.
pub const SERVICES: [&str; 4] = [
    "s3-connector",
    "redshift-connector",
    "cron-connector",
    "player-state-worker",
];
pub const INSTANCES_PER_SERVICE: usize = 2;

struct Instance {
    service: &'static str,
    slot: usize,
    process: ServiceProcess,
}

/// The running instances and what happened to them.
pub struct Fleet {
    /// Each service's env.
    env: BTreeMap<&'static str, Vec<(String, String)>>,
    /// Where the instances' logs go.
    pub logs: PathBuf,
    instances: Vec<Instance>,
    /// SIGKILLs sent, per service.
    pub kills: BTreeMap<&'static str, u64>,
    /// Instances that exited without being killed, as `service: status`.
    pub crashes: Vec<String>,
}

/// The log of every instance of a service, one after the other, in `dir`.
fn start(service: &'static str, slot: usize, env: &[(String, String)], dir: &Path) -> ServiceProcess {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let log = dir.join(format!("{service}-{slot}.log"));
    ServiceProcess::start_logged(&workspace_binary(service), &env, Some(&log))
}

impl Fleet {
    /// Starts every instance, each service with `env_of` it, and waits until each is
    /// ready.
    pub fn start(env_of: impl Fn(&'static str) -> Vec<(String, String)>, logs: PathBuf) -> Self {
        let env: BTreeMap<&'static str, Vec<(String, String)>> =
            SERVICES.iter().map(|service| (*service, env_of(service))).collect();
        std::fs::create_dir_all(&logs).unwrap_or_else(|e| panic!("create {}: {e}", logs.display()));
        let mut instances = Vec::new();
        for service in SERVICES {
            for slot in 0..INSTANCES_PER_SERVICE {
                instances.push(Instance {
                    service,
                    slot,
                    process: start(service, slot, &env[service], &logs),
                });
            }
        }
        for instance in &mut instances {
            let addr = instance.process.health_addr(Duration::from_secs(60));
            assert!(
                instance
                    .process
                    .wait_for_status(addr, "/readyz", 200, Duration::from_secs(60)),
                "{} becomes ready",
                instance.service
            );
        }
        Self {
            env,
            logs,
            instances,
            kills: BTreeMap::new(),
            crashes: Vec::new(),
        }
    }

    /// How many instances run (each is killed by its index).
    pub fn instance_count(&self) -> usize {
        self.instances.len()
    }

    /// SIGKILLs instance `index` (no flush, no checkpoint, no lease release) and starts
    /// a new one in its place (a new worker id, as a replaced container gets).
    pub fn kill_and_restart(&mut self, index: usize, pause: Duration) -> &'static str {
        let instance = &mut self.instances[index];
        instance.process.kill();
        *self.kills.entry(instance.service).or_insert(0) += 1;
        std::thread::sleep(pause);
        instance.process = start(instance.service, instance.slot, &self.env[instance.service], &self.logs);
        instance.service
    }

    /// Notes and restarts instances that exited on their own (a crash is a finding).
    pub fn restart_crashed(&mut self) {
        for instance in &mut self.instances {
            if let Some(status) = instance.process.exit_status() {
                self.crashes.push(format!("{}: {status}", instance.service));
                instance.process = start(instance.service, instance.slot, &self.env[instance.service], &self.logs);
            }
        }
    }

    /// Stops every instance with SIGTERM; returns those that did not exit cleanly
    /// within `deadline`.
    pub fn stop(mut self, deadline: Duration) -> Vec<String> {
        for instance in &self.instances {
            instance.process.terminate();
        }
        let mut unclean = Vec::new();
        for instance in &mut self.instances {
            match instance.process.wait_exit(deadline) {
                Some(status) if status.success() => {}
                Some(status) => unclean.push(format!("{}: {status}", instance.service)),
                None => unclean.push(format!("{}: still running after SIGTERM", instance.service)),
            }
        }
        unclean
    }
}
