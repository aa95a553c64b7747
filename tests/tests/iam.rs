//! Each service's task role in `infra/roles.json` allows exactly the AWS actions its
//! code calls, and nothing more.
//!
//! Every AWS call lives in a module that exists for it (a service's sink, the
//! consumer's sources and lease table, the runtime's lake writer and resource checks,
//! the warehouse's Data API, pipelinectl's AWS modules) and that says in `IAM_ACTIONS`
//! which actions its calls need. Each service lists, in `AWS_ACTIONS`, the modules it
//! calls AWS through; its role must grant their union. What a service calls through a
//! module but never needs, and what its calls need beyond their own action (KMS for
//! encrypted streams and objects), is listed with its reason in
//! `crates/<service>/aws-permissions.json`.
//!
//! That the modules tell the truth is checked here too: the source of every workspace
//! crate is read for the SDK's fluent calls (`.operation()` in a file that uses that
//! SDK's client); each must be in one of the modules below and among its `IAM_ACTIONS`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use pipeline_tests::sources::{root, rust_files, without_unit_tests};
use serde_json::Value;

/// Each service and the IAM actions of the modules it calls AWS through.
const SERVICES: [(&str, &[&[&str]]); 4] = [
    (s3_connector::SERVICE, s3_connector::AWS_ACTIONS),
    (redshift_connector::SERVICE, redshift_connector::AWS_ACTIONS),
    (cron_connector::SERVICE, cron_connector::AWS_ACTIONS),
    (player_state_worker::SERVICE, player_state_worker::AWS_ACTIONS),
];

/// Every module that calls AWS, by file, with the actions it says its calls need.
const AWS_MODULES: [(&str, &[&str]); 20] = [
    ("crates/s3-connector/src/sink.rs", s3_connector::sink::IAM_ACTIONS),
    (
        "crates/redshift-connector/src/sink.rs",
        redshift_connector::sink::IAM_ACTIONS,
    ),
    (
        "crates/player-state-worker/src/sink/player_state.rs",
        player_state_worker::sink::player_state::IAM_ACTIONS,
    ),
    (
        "crates/player-state-worker/src/sink/level_counts.rs",
        player_state_worker::sink::level_counts::IAM_ACTIONS,
    ),
    (
        "crates/player-state-worker/src/sink/quarantine.rs",
        player_state_worker::sink::quarantine::IAM_ACTIONS,
    ),
    ("crates/live-state/src/scan.rs", live_state::IAM_ACTIONS),
    (
        "crates/shard-consumer/src/kinesis.rs",
        shard_consumer::kinesis::IAM_ACTIONS,
    ),
    (
        "crates/shard-consumer/src/dynamodb_streams.rs",
        shard_consumer::dynamodb_streams::IAM_ACTIONS,
    ),
    (
        "crates/shard-consumer/src/lease_table.rs",
        shard_consumer::lease_table::IAM_ACTIONS,
    ),
    (
        "crates/runtime/src/resources/describe.rs",
        pipeline_runtime::resources::IAM_ACTIONS,
    ),
    ("crates/runtime/src/s3.rs", pipeline_runtime::s3::IAM_ACTIONS),
    ("crates/runtime/src/schemas.rs", pipeline_runtime::schemas::IAM_ACTIONS),
    (
        "crates/warehouse/src/redshift_data/data_api.rs",
        warehouse::redshift_data::IAM_ACTIONS,
    ),
    (
        "crates/pipelinectl/src/aws/lake.rs",
        pipelinectl::aws::lake::IAM_ACTIONS,
    ),
    (
        "crates/pipelinectl/src/aws/level_state.rs",
        pipelinectl::aws::level_state::IAM_ACTIONS,
    ),
    (
        "crates/pipelinectl/src/aws/player_state.rs",
        pipelinectl::aws::player_state::IAM_ACTIONS,
    ),
    (
        "crates/pipelinectl/src/aws/streams.rs",
        pipelinectl::aws::streams::IAM_ACTIONS,
    ),
    (
        "crates/pipelinectl/src/setup/dynamodb.rs",
        pipelinectl::setup::dynamodb::IAM_ACTIONS,
    ),
    (
        "crates/pipelinectl/src/setup/kinesis.rs",
        pipelinectl::setup::kinesis::IAM_ACTIONS,
    ),
    (
        "crates/pipelinectl/src/setup/s3.rs",
        pipelinectl::setup::s3::IAM_ACTIONS,
    ),
];

/// (SDK crate suffix, how code reaches its client, IAM prefix).
const SDKS: [(&str, &[&str], &str); 5] = [
    ("kinesis", &["aws_sdk_kinesis", ".kinesis()"], "kinesis"),
    ("dynamodb", &["aws_sdk_dynamodb::", ".dynamodb()"], "dynamodb"),
    (
        "dynamodbstreams",
        &["aws_sdk_dynamodbstreams", ".dynamodb_streams()"],
        "dynamodb",
    ),
    ("s3", &["aws_sdk_s3", ".s3()"], "s3"),
    (
        "redshiftdata",
        &["aws_sdk_redshiftdata", ".redshift_data()"],
        "redshift-data",
    ),
];

/// The IAM action an SDK operation needs, where it is not the operation's own name.
fn action(sdk: &str, prefix: &str, operation: &str) -> String {
    let special = match (sdk, operation) {
        ("s3", "head_bucket" | "list_objects_v2") => Some("s3:ListBucket"),
        ("s3", "list_object_versions") => Some("s3:ListBucketVersions"),
        ("s3", "head_object") => Some("s3:GetObject"),
        // Authorized per item: updates (condition checks are added in `called_actions`).
        ("dynamodb", "transact_write_items") => Some("dynamodb:UpdateItem"),
        _ => None,
    };
    if let Some(action) = special {
        return action.to_string();
    }
    assert!(
        sdk != "s3" || ["get_object", "put_object", "delete_object", "create_bucket"].contains(&operation),
        "S3 operation {operation}: add its IAM action to the table in tests/tests/iam.rs"
    );
    let pascal: String = operation
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect();
    format!("{prefix}:{pascal}")
}

/// The target triple rustc builds for here, from `rustc -vV`.
fn host_triple() -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let output = std::process::Command::new(rustc)
        .arg("-vV")
        .output()
        .expect("rustc -vV");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .expect("a host line in rustc -vV")
        .to_string()
}

/// Operation names of each SDK crate in the lock file (the `src/operation/` modules).
fn sdk_operations() -> BTreeMap<&'static str, BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // Offline, so only what this build downloaded is on disk: the host's packages. Without
    // the filter, cargo wants every platform's packages in the lock file (issue 14).
    let output = std::process::Command::new(cargo)
        .args(["metadata", "--format-version=1", "--locked", "--offline"])
        .args(["--filter-platform", &host_triple()])
        .current_dir(root())
        .output()
        .expect("cargo metadata");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let metadata: Value = serde_json::from_slice(&output.stdout).expect("metadata JSON");
    let mut operations = BTreeMap::new();
    for (sdk, _, _) in SDKS {
        let package = metadata["packages"]
            .as_array()
            .expect("packages")
            .iter()
            .find(|p| p["name"] == format!("aws-sdk-{sdk}"))
            .unwrap_or_else(|| panic!("aws-sdk-{sdk} in the lock file"));
        let dir = Path::new(package["manifest_path"].as_str().expect("manifest path"))
            .parent()
            .expect("crate dir")
            .join("src/operation");
        let names = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        operations.insert(sdk, names);
    }
    operations
}

/// Names `n` of every `.n()` in `code`: how the SDK's fluent builders start.
fn fluent_calls(code: &str) -> BTreeSet<&str> {
    let mut calls = BTreeSet::new();
    for (dot, _) in code.match_indices('.') {
        let rest = &code[dot + 1..];
        let end = rest
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(rest.len());
        if end > 0 && rest[end..].starts_with("()") {
            calls.insert(&rest[..end]);
        }
    }
    calls
}

/// The actions each file of the workspace's crates calls, by file (relative to the root).
fn called_actions() -> BTreeMap<String, BTreeSet<String>> {
    let operations = sdk_operations();
    let mut called = BTreeMap::new();
    for file in rust_files(&root().join("crates")) {
        if !file.components().any(|c| c.as_os_str() == "src") {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("source");
        let code = without_unit_tests(&text);
        let calls = fluent_calls(code);
        let mut actions = BTreeSet::new();
        for (sdk, markers, prefix) in SDKS {
            if markers.iter().any(|m| code.contains(m)) {
                actions.extend(
                    calls
                        .iter()
                        .filter(|c| operations[sdk].contains(**c))
                        .map(|operation| action(sdk, prefix, operation)),
                );
            }
        }
        // TransactWriteItems is authorized per item: its condition checks (reconcile-levels'
        // guards) as ConditionCheckItem.
        if calls.contains("transact_write_items") && code.contains("ConditionCheck::builder") {
            actions.insert("dynamodb:ConditionCheckItem".to_string());
        }
        if !actions.is_empty() {
            let relative = file.strip_prefix(root()).unwrap_or(&file);
            let relative = relative
                .components()
                .filter(|c| c.as_os_str() != "..")
                .collect::<std::path::PathBuf>();
            called.insert(relative.display().to_string(), actions);
        }
    }
    called
}

/// The actions `service` needs: those of the modules it calls AWS through.
fn service_actions(modules: &[&[&str]]) -> BTreeSet<String> {
    modules.iter().flat_map(|m| m.iter()).map(|a| a.to_string()).collect()
}

fn role_actions(template: &Value, role: &str) -> BTreeSet<String> {
    let mut actions = BTreeSet::new();
    let policies = template["Resources"][role]["Properties"]["Policies"].as_array();
    for policy in policies.into_iter().flatten() {
        for statement in policy["PolicyDocument"]["Statement"].as_array().expect("statements") {
            assert_eq!(statement["Effect"], "Allow", "{role}: only Allow statements");
            match &statement["Action"] {
                Value::String(a) => {
                    actions.insert(a.clone());
                }
                Value::Array(list) => actions.extend(list.iter().map(|a| a.as_str().expect("action").to_string())),
                other => panic!("{role}: Action {other}"),
            }
        }
    }
    actions
}

fn role_name(service: &str) -> String {
    let pascal: String = service.split('-').map(|w| w[..1].to_uppercase() + &w[1..]).collect();
    format!("{pascal}TaskRole")
}

#[test]
fn each_task_role_allows_exactly_what_its_service_calls() {
    let template: Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("infra/roles.json")).expect("infra/roles.json"))
            .expect("roles.json is JSON");
    let mut problems = Vec::new();
    for (service, modules) in SERVICES {
        let called = service_actions(modules);
        let path = root().join(format!("crates/{service}/aws-permissions.json"));
        let declared: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("aws-permissions.json"))
            .expect("aws-permissions.json is JSON");
        let listed =
            |key: &str| -> BTreeSet<String> { declared[key].as_object().expect(key).keys().cloned().collect() };
        let (not_called, implied) = (listed("not_called"), listed("implied"));
        for stale in not_called.difference(&called) {
            problems.push(format!(
                "{service}: not_called lists {stale}, which none of the modules it calls AWS through calls"
            ));
        }
        for both in implied.intersection(&called) {
            problems.push(format!("{service}: implied lists {both}, which its code calls"));
        }
        let expected: BTreeSet<String> = called.difference(&not_called).chain(&implied).cloned().collect();
        let role = role_name(service);
        let allowed = role_actions(&template, &role);
        for missing in expected.difference(&allowed) {
            let why = if implied.contains(missing) { "implied" } else { "called" };
            problems.push(format!("{role} lacks {missing} ({why})"));
        }
        for extra in allowed.difference(&expected) {
            problems.push(format!("{role} allows {extra}, which {service} never calls"));
        }
        for wildcard in allowed.iter().filter(|a| a.contains('*')) {
            problems.push(format!("{role} allows the wildcard action {wildcard}"));
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn every_aws_call_is_made_in_a_module_that_declares_it() {
    let declared: BTreeMap<&str, BTreeSet<&str>> = AWS_MODULES
        .iter()
        .map(|(file, actions)| (*file, actions.iter().copied().collect()))
        .collect();
    let called = called_actions();
    let mut problems = Vec::new();
    for (file, actions) in &called {
        let Some(declared) = declared.get(file.as_str()) else {
            problems.push(format!(
                "{file} calls {actions:?}: AWS calls belong in a sink or AWS module listed in tests/tests/iam.rs, with its IAM_ACTIONS"
            ));
            continue;
        };
        for undeclared in actions.iter().filter(|a| !declared.contains(a.as_str())) {
            problems.push(format!("{file} calls {undeclared}, which its IAM_ACTIONS lacks"));
        }
    }
    // A module may declare what it calls through another (a sink through the runtime's
    // lake writer), never an action no code calls.
    let mut everything: BTreeSet<&str> = called.values().flatten().map(String::as_str).collect();
    // GetObject and DeleteObject given a version id are authorized as
    // GetObjectVersion and DeleteObjectVersion.
    for (call, with_version) in [
        ("s3:GetObject", "s3:GetObjectVersion"),
        ("s3:DeleteObject", "s3:DeleteObjectVersion"),
    ] {
        if everything.contains(call) {
            everything.insert(with_version);
        }
    }
    for (file, actions) in &declared {
        assert!(
            Path::new(&root()).join(file).is_file(),
            "{file} is listed but does not exist"
        );
        for invented in actions.iter().filter(|a| !everything.contains(*a)) {
            problems.push(format!("{file} declares {invented}, which no code calls"));
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn fluent_calls_are_found_across_lines() {
    let code = "client\n    .get_records()\n    .shard_iterator(x)\n    .send().await; a.b(1); .Up()";
    assert_eq!(
        fluent_calls(code).into_iter().collect::<Vec<_>>(),
        vec!["get_records", "send"]
    );
}

#[test]
fn the_scan_finds_the_calls_we_know_of() {
    let called = called_actions();
    for (file, known) in [
        ("crates/shard-consumer/src/kinesis.rs", "kinesis:GetRecords"),
        ("crates/s3-connector/src/sink.rs", "kinesis:PutRecord"),
        ("crates/runtime/src/s3.rs", "s3:PutObject"),
        ("crates/shard-consumer/src/lease_table.rs", "dynamodb:UpdateItem"),
        (
            "crates/shard-consumer/src/dynamodb_streams.rs",
            "dynamodb:GetShardIterator",
        ),
        (
            "crates/warehouse/src/redshift_data/data_api.rs",
            "redshift-data:BatchExecuteStatement",
        ),
    ] {
        assert!(
            called.get(file).is_some_and(|a| a.contains(known)),
            "{known} not found in {file}: {called:?}"
        );
    }
}
