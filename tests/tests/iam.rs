//! Each service's task role in `infra/roles.json` allows exactly the AWS actions its
//! code calls, and nothing more. The calls are found in the source of the service's
//! crate and of the workspace crates it depends on: a fluent SDK call `.operation()`
//! in a file that uses that SDK's client. What a service's dependencies can call but
//! the service never does, and what a call needs beyond its own action (KMS for
//! encrypted streams and objects), is listed with its reason in
//! `crates/<service>/aws-permissions.json`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use pipeline_tests::sources::{root, rust_files, without_unit_tests};
use serde_json::Value;

const SERVICES: [&str; 4] = [
    "s3-connector",
    "redshift-connector",
    "cron-connector",
    "player-state-worker",
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
        ("s3", "head_object") => Some("s3:GetObject"),
        // Authorized per item; the level stage's transactions hold updates only.
        ("dynamodb", "transact_write_items") => Some("dynamodb:UpdateItem"),
        _ => None,
    };
    if let Some(action) = special {
        return action.to_string();
    }
    assert!(
        sdk != "s3" || ["get_object", "put_object", "delete_object"].contains(&operation),
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

/// Workspace crates by package name: their folder and workspace dependencies.
fn workspace_crates() -> BTreeMap<String, (PathBuf, Vec<String>)> {
    let mut crates = BTreeMap::new();
    for entry in std::fs::read_dir(root().join("crates")).expect("crates/") {
        let dir = entry.expect("entry").path();
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).expect("Cargo.toml");
        let name = manifest
            .lines()
            .find_map(|l| l.strip_prefix("name = \""))
            .and_then(|l| l.strip_suffix('"'))
            .expect("package name")
            .to_string();
        let dependencies = manifest
            .split("[dependencies]")
            .nth(1)
            .unwrap_or_default()
            .split("\n[")
            .next()
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(['.', ' ', '=']).next())
            .filter(|n| !n.is_empty() && !n.starts_with('#'))
            .map(str::to_string)
            .collect();
        crates.insert(name, (dir, dependencies));
    }
    crates
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

/// The actions the code of `service` and its workspace dependencies can call, each
/// with a file that calls it.
fn called_actions(service: &str) -> BTreeMap<String, String> {
    let crates = workspace_crates();
    let operations = sdk_operations();
    let mut todo = vec![service.to_string()];
    let mut seen = BTreeSet::new();
    let mut actions = BTreeMap::new();
    while let Some(name) = todo.pop() {
        let Some((dir, dependencies)) = crates.get(&name) else {
            continue;
        };
        if !seen.insert(name.clone()) {
            continue;
        }
        todo.extend(dependencies.iter().cloned());
        for file in rust_files(&dir.join("src")) {
            let text = std::fs::read_to_string(&file).expect("source");
            let code = without_unit_tests(&text);
            let calls = fluent_calls(code);
            for (sdk, markers, prefix) in SDKS {
                if !markers.iter().any(|m| code.contains(m)) {
                    continue;
                }
                for operation in calls.iter().filter(|c| operations[sdk].contains(**c)) {
                    actions
                        .entry(action(sdk, prefix, operation))
                        .or_insert_with(|| file.strip_prefix(root()).unwrap_or(&file).display().to_string());
                }
            }
        }
    }
    actions
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
    for service in SERVICES {
        let called = called_actions(service);
        let path = root().join(format!("crates/{service}/aws-permissions.json"));
        let declared: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("aws-permissions.json"))
            .expect("aws-permissions.json is JSON");
        let not_called: BTreeSet<String> = declared["not_called"]
            .as_object()
            .expect("not_called")
            .keys()
            .cloned()
            .collect();
        let implied: BTreeSet<String> = declared["implied"]
            .as_object()
            .expect("implied")
            .keys()
            .cloned()
            .collect();
        for stale in not_called.iter().filter(|a| !called.contains_key(*a)) {
            problems.push(format!(
                "{service}: not_called lists {stale}, which no code of it calls any more"
            ));
        }
        for both in implied.iter().filter(|a| called.contains_key(*a)) {
            problems.push(format!("{service}: implied lists {both}, which its code calls"));
        }
        let expected: BTreeSet<String> = called
            .keys()
            .filter(|a| !not_called.contains(*a))
            .cloned()
            .chain(implied.iter().cloned())
            .collect();
        let role = role_name(service);
        let allowed = role_actions(&template, &role);
        for missing in expected.difference(&allowed) {
            let why = called
                .get(missing)
                .map_or("implied".to_string(), |f| format!("called in {f}"));
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
fn fluent_calls_are_found_across_lines() {
    let code = "client\n    .get_records()\n    .shard_iterator(x)\n    .send().await; a.b(1); .Up()";
    assert_eq!(
        fluent_calls(code).into_iter().collect::<Vec<_>>(),
        vec!["get_records", "send"]
    );
}

#[test]
fn the_scan_finds_the_calls_we_know_of() {
    let s3 = called_actions("s3-connector");
    for known in [
        "kinesis:PutRecord",
        "kinesis:GetRecords",
        "s3:PutObject",
        "dynamodb:UpdateItem",
    ] {
        assert!(s3.contains_key(known), "{known} not found: {s3:?}");
    }
    let worker = called_actions("player-state-worker");
    assert!(worker.contains_key("dynamodb:GetShardIterator"), "{worker:?}");
    assert!(worker.contains_key("s3:PutObject"), "quarantined records: {worker:?}");
    assert!(
        !worker.contains_key("redshift-data:BatchExecuteStatement"),
        "{worker:?}"
    );
    let loader = called_actions("redshift-connector");
    assert!(loader.contains_key("redshift-data:BatchExecuteStatement"), "{loader:?}");
}
