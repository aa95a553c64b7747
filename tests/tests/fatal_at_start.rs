//! A service that cannot work exits at once, non-zero, with a message naming what is
//! missing or forbidden: the orchestrator restarts it and an alarm fires, instead of a
//! process that stays "ready" and does nothing.

use std::time::Duration;

use pipeline_tests::iam_moto::{ACCOUNT, IamMoto};
use pipeline_tests::process::{ServiceProcess, workspace_binary};
use pipeline_tests::resources::Resources;
use pipeline_tests::stack;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_table_is_fatal_at_start_naming_it() {
    let aws = stack::aws().await;
    let resources = Resources::unique();
    resources.create(&aws).await;
    let missing = stack::unique_name("no-such-levels");
    let mut env = resources.env();
    env.retain(|(var, _)| *var != "LEVEL_STATE_TABLE");
    env.push(("LEVEL_STATE_TABLE", &missing));
    let mut worker = ServiceProcess::start(&workspace_binary("player-state-worker"), &env);
    let (failed, log) = worker.failed_within(Duration::from_secs(10));
    assert!(failed, "the worker exits non-zero within seconds:\n{log}");
    assert!(log.contains(&missing) && log.contains("ResourceNotFound"), "{log}");
    resources.delete(&aws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_table_this_deployment_may_not_create_is_fatal_at_start() {
    let aws = stack::aws().await;
    let resources = Resources::unique();
    resources.create(&aws).await;
    let missing = stack::unique_name("no-such-leases");
    let mut env = resources.env();
    env.retain(|(var, _)| *var != "S3_CONNECTOR_LEASE_TABLE");
    env.extend_from_slice(&[
        ("S3_CONNECTOR_LEASE_TABLE", missing.as_str()),
        ("CREATE_LEASE_TABLES", "false"),
    ]);
    let mut connector = ServiceProcess::start(&workspace_binary("s3-connector"), &env);
    let (failed, log) = connector.failed_within(Duration::from_secs(10));
    assert!(failed, "the connector exits non-zero within seconds:\n{log}");
    assert!(log.contains(&missing) && log.contains("CREATE_LEASE_TABLES"), "{log}");
    resources.delete(&aws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forbidden_table_is_fatal_at_start_naming_the_permission() {
    // Free requests: the principal (3) and the bucket (1); then moto checks every call.
    let moto = IamMoto::start(4);
    let lease_table = stack::unique_name("forbidden-leases");
    let bucket = stack::unique_name("iam-lake");
    let (telemetry, files) = (stack::unique_name("iam-telemetry"), stack::unique_name("iam-files"));
    let region = "us-east-1";
    // Everything the connector needs but its lease table. (moto authorizes HeadBucket as
    // `s3:HeadBucket`, an action real IAM does not have: AWS checks `s3:ListBucket`.)
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:HeadBucket", "s3:PutObject"], "Resource": [
                format!("arn:aws:s3:::{bucket}"), format!("arn:aws:s3:::{bucket}/*")]},
            {"Effect": "Allow", "Action": ["kinesis:*"], "Resource": "*"},
            {"Effect": "Allow", "Action": ["dynamodb:GetItem"], "Resource":
                format!("arn:aws:dynamodb:{region}:{ACCOUNT}:table/{lease_table}")},
        ]
    });
    let key = moto.principal(None, "s3-connector", &policy).await;
    aws_sdk_s3::Client::new(&moto.sdk_config(None).await)
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("create the bucket");
    // Kinesis stays on kinesalite, which checks nothing.
    let aws = stack::aws().await;
    stack::create_stream(&aws, &telemetry, 1).await;
    stack::create_stream(&aws, &files, 1).await;

    let env = [
        ("AWS_ENDPOINT_URL", moto.endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", key.id.as_str()),
        ("AWS_SECRET_ACCESS_KEY", key.secret.as_str()),
        ("AWS_MAX_ATTEMPTS", "1"),
        ("TELEMETRY_STREAM", telemetry.as_str()),
        ("FILES_STREAM", files.as_str()),
        ("BUCKET", bucket.as_str()),
        ("S3_CONNECTOR_LEASE_TABLE", lease_table.as_str()),
    ];
    let mut connector = ServiceProcess::start(&workspace_binary("s3-connector"), &env);
    let (failed, log) = connector.failed_within(Duration::from_secs(10));
    assert!(failed, "the connector exits non-zero within seconds:\n{log}");
    assert!(
        log.contains(&lease_table) && log.contains("permission dynamodb:DescribeTable denied"),
        "the message names the table and the permission:\n{log}"
    );
    stack::delete_stream(&aws, &telemetry).await;
    stack::delete_stream(&aws, &files).await;
}
