//! `setup` creates every resource, a second run changes nothing, and `--verify` agrees.

use clap::CommandFactory;
use pipeline_tests::process::run_command;
use pipeline_tests::resources::{RESOURCE_VARS, Resources};
use pipeline_tests::stack;

const BIN: &str = env!("CARGO_BIN_EXE_pipelinectl");

fn pipelinectl(env: &[(&str, &str)], args: &[&str]) -> (bool, String) {
    let env: Vec<(&str, &str)> = [("LOG_FORMAT", "json")]
        .into_iter()
        .chain(env.iter().copied())
        .collect();
    let (code, text) = run_command(BIN, &env, args);
    (code == Some(0), text)
}

/// Every resource setup makes: one per variable, and the worker tables beside the four
/// shard consumers' lease tables.
const RESOURCES: usize = RESOURCE_VARS.len() + 4;

#[tokio::test]
async fn setup_twice_creates_once_and_verify_finds_everything() {
    let resources = Resources::unique();
    let env = resources.env();
    let (ok, before) = pipelinectl(&env, &["setup", "--verify"]);
    assert!(!ok, "nothing exists yet, verify must fail:\n{before}");
    assert_eq!(before.matches("missing or wrong").count(), RESOURCES, "{before}");

    let (ok, first) = pipelinectl(&env, &["setup", "--telemetry-shards", "3"]);
    assert!(ok, "first setup:\n{first}");
    assert_eq!(first.matches("created").count(), RESOURCES, "{first}");
    assert!(first.contains("TTL on expiresAt"), "{first}");
    assert!(first.contains("warehouse schema at version"), "{first}");

    let (ok, second) = pipelinectl(&env, &["setup", "--telemetry-shards", "3"]);
    assert!(ok, "second setup:\n{second}");
    assert_eq!(second.matches("exists").count(), RESOURCES, "{second}");
    assert!(
        !second.contains("created") && !second.contains("updated"),
        "the second run changed something:\n{second}"
    );

    let (ok, verified) = pipelinectl(&env, &["setup", "--verify"]);
    assert!(ok, "verify after setup:\n{verified}");

    // The resources are really there, in the shape the services need.
    let aws = stack::aws().await;
    let summary = aws
        .kinesis()
        .describe_stream_summary()
        .stream_name(resources.name("TELEMETRY_STREAM"))
        .send()
        .await
        .expect("telemetry stream");
    assert_eq!(
        summary.stream_description_summary().map(|s| s.open_shard_count()),
        Some(3)
    );
    let player_state = aws
        .dynamodb()
        .describe_table()
        .table_name(resources.name("PLAYER_STATE_TABLE"))
        .send()
        .await
        .expect("PlayerState");
    assert!(player_state.table().and_then(|t| t.latest_stream_arn()).is_some());
    resources.delete(&aws).await;
}

#[tokio::test]
async fn setup_refuses_a_table_of_another_shape() {
    let aws = stack::aws().await;
    let other = Resources::unique();
    other.create(&aws).await;
    // PlayerState named after another set's lease table: wrong key, no stream.
    let lease_table = other.name("S3_CONNECTOR_LEASE_TABLE").to_string();
    let resources = Resources::unique();
    let mut env = resources.env();
    env.retain(|(var, _)| *var != "PLAYER_STATE_TABLE");
    env.push(("PLAYER_STATE_TABLE", &lease_table));
    let (ok, text) = pipelinectl(&env, &["setup"]);
    assert!(!ok, "a table of another shape must be refused:\n{text}");
    assert!(
        text.contains(&lease_table) && text.contains("does not reshape"),
        "{text}"
    );
    let (ok, text) = pipelinectl(&env, &["setup", "--verify"]);
    assert!(!ok && text.contains(&lease_table), "{text}");
    resources.delete(&aws).await;
    other.delete(&aws).await;
}

#[test]
fn help_documents_every_setting() {
    let cli = pipelinectl::Cli::command();
    let setup = cli.find_subcommand("setup").expect("setup subcommand").clone();
    pipeline_tests::help::assert_every_setting_documented_in(BIN, &["setup", "--help"], &setup);
    for name in [
        "generate",
        "levels",
        "heatmap",
        "level-map",
        "summary",
        "serve",
        "healthcheck",
    ] {
        let sub = cli.find_subcommand(name).expect("subcommand").clone();
        pipeline_tests::help::assert_every_setting_documented_in(BIN, &[name, "--help"], &sub);
    }
    pipeline_tests::help::assert_every_setting_documented_in(BIN, &["--help"], &cli);
}

#[tokio::test]
async fn setup_warehouse_only_makes_the_schema_and_grants_and_nothing_else() {
    let resources = Resources::unique();
    let schema = format!("setup_only_{}", uuid::Uuid::new_v4().simple());
    let owner = stack::connect_warehouse(&stack::warehouse_url()).await;
    owner
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .expect("create schema");
    let url = format!("{}?options=-csearch_path%3D{schema}", stack::warehouse_url());
    let mut env = resources.env();
    env.push(("WAREHOUSE_URL", &url));
    let only = ["setup", "--warehouse-only"];

    let (ok, before) = pipelinectl(&env, &[&only[..], &["--verify"]].concat());
    assert!(!ok && before.contains("schema is at version 0"), "{before}");
    let (ok, made) = pipelinectl(
        &env,
        &[&only[..], &["--warehouse-loader-users", stack::LOADER_USER]].concat(),
    );
    assert!(ok, "{made}");
    assert!(
        made.contains("warehouse schema at version 3") && made.contains("Loader grants"),
        "{made}"
    );
    assert!(!made.contains("created"), "no AWS resource is made:\n{made}");
    let (ok, verified) = pipelinectl(&env, &[&only[..], &["--verify"]].concat());
    assert!(ok, "{verified}");
    let (ok, all) = pipelinectl(&env, &["setup", "--verify"]);
    assert!(
        !ok && all.contains("missing or wrong"),
        "the streams, bucket and tables were left alone:\n{all}"
    );

    // The loader's grants work: it reads the version.
    let loader_url = format!(
        "{}?options=-csearch_path%3D{schema}",
        stack::as_user(&stack::warehouse_url(), stack::LOADER_USER)
    );
    let loader = stack::connect_warehouse(&loader_url).await;
    let version: i32 = loader
        .query_one("SELECT MAX(version) FROM schema_version", &[])
        .await
        .expect("the loader reads schema_version")
        .get(0);
    assert_eq!(version, 3);
    owner
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .expect("drop schema");
}
