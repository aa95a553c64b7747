//! The checks every service binary passes, run against the real binary.

use std::process::Command;
use std::time::Duration;

use crate::process::ServiceProcess;
use crate::resources::Resources;
use crate::stack;

/// With its resources in place, the service becomes ready, answers health checks,
/// and on SIGTERM stops with status 0 within its deadline.
pub async fn assert_ready_then_clean_stop_on_sigterm(binary: &str) {
    let aws = stack::aws().await;
    let resources = Resources::unique();
    resources.create(&aws).await;
    // A warehouse service runs as its own user, on a schema `pipelinectl setup` made.
    let warehouse = stack::warehouse_schema("ready").await;
    let service = std::path::Path::new(binary)
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or(binary);
    let warehouse_url = warehouse.users.url_for(service);
    let mut env = resources.env();
    env.push(("METRICS_FLUSH_INTERVAL_SECS", "1"));
    env.push(("WAREHOUSE_URL", warehouse_url));
    let mut service = ServiceProcess::start(binary, &env);
    let addr = service.health_addr(Duration::from_secs(20));
    assert!(
        service.wait_for_status(addr, "/healthz", 200, Duration::from_secs(5)),
        "/healthz answers 200"
    );
    assert!(
        service.wait_for_status(addr, "/readyz", 200, Duration::from_secs(30)),
        "/readyz turns 200"
    );
    service.terminate();
    let status = service
        .wait_exit(Duration::from_secs(20))
        .expect("the service exits after SIGTERM");
    assert!(status.success(), "clean stop exits 0, got {status}");
    let logs = service.json_lines();
    assert!(
        logs.iter()
            .any(|l| l["message"] == "shutdown requested" && l["signal"] == "SIGTERM"),
        "the signal is logged as JSON: {logs:?}"
    );
    assert!(logs.iter().any(|l| l["message"] == "service stopped"), "{logs:?}");
    let heartbeat = logs
        .iter()
        .find(|l| l["_aws"]["CloudWatchMetrics"].is_array() && l["Up"] == 1.0)
        .expect("the Up heartbeat is written to stdout in Embedded Metric Format");
    assert_eq!(
        heartbeat["_aws"]["CloudWatchMetrics"][0]["Namespace"],
        "GamingAnalytics"
    );
    assert!(heartbeat["Service"].is_string());
    resources.delete(&aws).await;
    warehouse.drop_all().await;
}

/// A bad value in an env var stops the binary at once, naming the variable.
pub fn assert_bad_env_value_is_named(binary: &str) {
    let output = Command::new(binary)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(stack::service_env())
        .env("BUCKET", "lake")
        .env("METRICS_FLUSH_INTERVAL_SECS", "ten")
        .output()
        .expect("run binary");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("environment variable METRICS_FLUSH_INTERVAL_SECS has an invalid value \"ten\""),
        "{stderr}"
    );
}

/// Started against resources that do not exist, the service exits with status 1
/// and its log names what is missing.
pub async fn assert_missing_resources_are_named(binary: &str, expected_var: &str) {
    let resources = Resources::unique();
    let mut service = ServiceProcess::start(binary, &resources.env());
    let status = service
        .wait_exit(Duration::from_secs(30))
        .expect("the service gives up at once");
    assert_eq!(status.code(), Some(1));
    let missing = resources.name(expected_var).to_string();
    let logs = service.json_lines();
    assert!(
        logs.iter()
            .any(|l| l["message"] == "service failed" && l["error"].as_str().is_some_and(|e| e.contains(&missing))),
        "the failure names {missing}: {logs:?}"
    );
}
