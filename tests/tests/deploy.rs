//! The three ways to run the services on AWS agree with each other and with the
//! services: `infra/compute.json` (CloudFormation), `deploy/ecs/` (the ECS API's JSON)
//! and `deploy/beanstalk/docker-compose.yml` set the same variables, each one a
//! setting the service has; tasks have the same size; the stop timeout outlasts the
//! shutdown deadline; the health check is the image's own, on `/healthz`; every
//! Beanstalk container publishes its health port.

use std::collections::BTreeSet;
use std::path::Path;

use clap::CommandFactory;
use serde_json::Value;

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn settings(command: clap::Command) -> BTreeSet<String> {
    command
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().to_string())
        .collect()
}

fn service_settings(service: &str) -> BTreeSet<String> {
    match service {
        "s3-connector" => settings(s3_connector::Config::command()),
        "redshift-connector" => settings(redshift_connector::Config::command()),
        "cron-connector" => settings(cron_connector::Config::command()),
        "player-state-worker" => settings(player_state_worker::Config::command()),
        other => panic!("unknown service {other}"),
    }
}

fn pascal(service: &str) -> String {
    service.split('-').map(|w| w[..1].to_uppercase() + &w[1..]).collect()
}

/// The lines of a top-level block of the compose file (`name:` at `indent` spaces)
/// up to the next line indented as little.
fn compose_block(compose: &str, name: &str, indent: usize) -> String {
    let header = format!("{}{name}:", " ".repeat(indent));
    let mut lines = compose.lines().skip_while(|l| !l.starts_with(&header));
    assert!(lines.next().is_some(), "docker-compose.yml has no {name}");
    lines
        .take_while(|l| l.is_empty() || l.starts_with(&" ".repeat(indent + 1)))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn compute_template_ecs_files_and_beanstalk_agree_with_the_services() {
    let compute: Value = serde_json::from_str(&read("infra/compute.json")).expect("compute.json");
    let compose = read("deploy/beanstalk/docker-compose.yml");
    let dockerfile = read("Dockerfile");
    assert!(
        dockerfile.contains("\nUSER 10001:10001\n"),
        "the image runs as a non-root user"
    );
    assert!(dockerfile.contains("\nHEALTHCHECK "), "the image has a health check");
    // Liveness: readiness waits on the warehouse, and a failed check replaces the container.
    assert!(
        pipelinectl::healthcheck::DEFAULT_URL.ends_with("/healthz") && !dockerfile.contains("/readyz"),
        "container health checks ask /healthz"
    );
    assert!(
        compose.contains("test: [\"CMD\", \"/usr/local/bin/pipelinectl\", \"healthcheck\"]"),
        "the Beanstalk containers use the image's health check"
    );
    for service in [
        "s3-connector",
        "redshift-connector",
        "cron-connector",
        "player-state-worker",
    ] {
        let cfn = &compute["Resources"][format!("{}TaskDefinition", pascal(service))]["Properties"];
        let container = &cfn["ContainerDefinitions"][0];
        let ecs: Value = serde_json::from_str(&read(&format!("deploy/ecs/{service}.task-definition.json")))
            .expect("task definition");
        let ecs_container = &ecs["containerDefinitions"][0];

        let cfn_env: BTreeSet<String> = container["Environment"]
            .as_array()
            .expect("env")
            .iter()
            .map(|e| e["Name"].as_str().expect("name").to_string())
            .collect();
        let ecs_env: BTreeSet<String> = ecs_container["environment"]
            .as_array()
            .expect("env")
            .iter()
            .map(|e| e["name"].as_str().expect("name").to_string())
            .collect();
        assert_eq!(
            cfn_env, ecs_env,
            "{service}: compute.json and deploy/ecs set different variables"
        );
        let known = service_settings(service);
        for variable in &cfn_env {
            assert!(known.contains(variable), "{service} has no setting {variable}");
        }
        let block = compose_block(&compose, service, 2);
        let common = compose_block(&compose, "x-common-env", 0);
        for variable in &cfn_env {
            let set = |text: &str| {
                text.lines()
                    .any(|l| l.trim_start().starts_with(&format!("{variable}: ")))
            };
            assert!(
                set(&block) || set(&common),
                "{service}: docker-compose.yml does not set {variable}"
            );
        }
        assert!(block.contains(&format!("command: [\"{service}\"]")), "{block}");
        assert!(
            block.contains("    ports:\n") && block.contains(":8080\""),
            "{service}: docker-compose.yml publishes no health port"
        );

        assert_eq!(cfn["Cpu"], ecs["cpu"], "{service}: cpu");
        assert_eq!(cfn["Memory"], ecs["memory"], "{service}: memory");
        assert_eq!(container["Command"], serde_json::json!([service]));
        assert_eq!(ecs_container["command"], serde_json::json!([service]));
        assert_eq!(container["ReadonlyRootFilesystem"], true);
        assert_eq!(ecs_container["readonlyRootFilesystem"], true);
        let deadline: u64 = container["Environment"]
            .as_array()
            .expect("env")
            .iter()
            .find(|e| e["Name"] == "SHUTDOWN_DEADLINE_SECS")
            .and_then(|e| e["Value"].as_str())
            .and_then(|v| v.parse().ok())
            .expect("SHUTDOWN_DEADLINE_SECS is set explicitly");
        for stop in [&container["StopTimeout"], &ecs_container["stopTimeout"]] {
            assert!(
                stop.as_u64().is_some_and(|s| s > deadline),
                "{service}: stop timeout {stop} ≤ {deadline}"
            );
        }
        for check in [
            &container["HealthCheck"]["Command"],
            &ecs_container["healthCheck"]["command"],
        ] {
            assert_eq!(
                check,
                &serde_json::json!(["CMD", "/usr/local/bin/pipelinectl", "healthcheck"])
            );
        }
    }
}
