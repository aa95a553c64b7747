//! `infra/data-plane.json` deploys into the local moto through its CloudFormation API,
//! `pipelinectl setup --verify` finds every resource the services expect under the
//! names in the stack's outputs, and a service starts against them.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use aws_sdk_cloudformation::types::{Parameter, StackStatus};
use pipeline_tests::process::{ServiceProcess, workspace_binary};
use pipeline_tests::stack;

const TEMPLATE: &str = include_str!("../../infra/data-plane.json");

/// CloudFormation on the local moto, with the stack's credentials, region and timeouts.
fn cloudformation(aws: &pipeline_runtime::AwsClients) -> aws_sdk_cloudformation::Client {
    let config = aws_sdk_cloudformation::config::Builder::from(aws.sdk_config())
        .endpoint_url(stack::moto_endpoint())
        .build();
    aws_sdk_cloudformation::Client::from_conf(config)
}

/// Deploys the template and returns its outputs as env vars (each output's
/// description is the variable it sets).
async fn deploy(cfn: &aws_sdk_cloudformation::Client, name: &str) -> BTreeMap<String, String> {
    cfn.create_stack()
        .stack_name(name)
        .template_body(TEMPLATE)
        .parameters(
            Parameter::builder()
                .parameter_key("NamePrefix")
                .parameter_value(name)
                .build(),
        )
        .send()
        .await
        .expect("create the stack");
    for _ in 0..120 {
        let stack = cfn
            .describe_stacks()
            .stack_name(name)
            .send()
            .await
            .expect("describe the stack")
            .stacks()
            .first()
            .cloned()
            .expect("the stack");
        match stack.stack_status() {
            Some(StackStatus::CreateComplete) => {
                return stack
                    .outputs()
                    .iter()
                    .filter_map(|o| Some((o.description()?.to_string(), o.output_value()?.to_string())))
                    .filter(|(variable, _)| {
                        variable
                            .chars()
                            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                    })
                    .collect();
            }
            Some(StackStatus::CreateInProgress) => tokio::time::sleep(Duration::from_millis(500)).await,
            other => panic!("the stack ended {other:?}: {:?}", stack.stack_status_reason()),
        }
    }
    panic!("the stack was not created within 60 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_plane_template_makes_what_the_services_expect() {
    let aws = stack::aws().await;
    let cfn = cloudformation(&aws);
    let name = stack::unique_name("dp");
    let outputs = deploy(&cfn, &name).await;
    for variable in pipeline_tests::resources::RESOURCE_VARS {
        assert!(
            outputs.contains_key(*variable),
            "no output sets {variable}: {outputs:?}"
        );
    }

    // moto's CloudFormation ignores TimeToLiveSpecification (real CloudFormation
    // applies it): check the template asks for it, then turn it on as CloudFormation would.
    let template: serde_json::Value = serde_json::from_str(TEMPLATE).expect("the template is JSON");
    assert_eq!(
        template["Resources"]["TransitionsTable"]["Properties"]["TimeToLiveSpecification"],
        serde_json::json!({ "AttributeName": "expiresAt", "Enabled": true })
    );
    aws.dynamodb()
        .update_time_to_live()
        .table_name(&outputs["TRANSITIONS_TABLE"])
        .time_to_live_specification(
            aws_sdk_dynamodb::types::TimeToLiveSpecification::builder()
                .attribute_name("expiresAt")
                .enabled(true)
                .build()
                .expect("ttl"),
        )
        .send()
        .await
        .expect("ttl on");

    // The template's streams live in moto's Kinesis, not kinesalite.
    let moto = stack::moto_endpoint();
    let mut env: Vec<(&str, &str)> = outputs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.push(("AWS_ENDPOINT_URL_KINESIS", &moto));
    let verify = Command::new(workspace_binary("pipelinectl"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(stack::service_env())
        .envs(env.iter().copied())
        .args(["setup", "--verify", "--log-format=text"])
        .output()
        .expect("run setup --verify");
    let text = String::from_utf8_lossy(&verify.stdout);
    assert!(
        verify.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    // One per output, and the worker tables beside the four shard consumers' lease tables.
    assert!(text.contains("all 16 resources are present"), "{text}");

    // A service checks its own resources at start and becomes ready on them.
    let mut service = ServiceProcess::start(&workspace_binary("player-state-worker"), &env);
    let addr = service.health_addr(Duration::from_secs(30));
    assert!(
        service.wait_for_status(addr, "/readyz", 200, Duration::from_secs(30)),
        "the worker is not ready on the template's resources: {:?}",
        service.json_lines()
    );
    service.terminate();
    assert!(service.wait_exit(Duration::from_secs(30)).is_some_and(|s| s.success()));

    cfn.delete_stack()
        .stack_name(&name)
        .send()
        .await
        .expect("delete the stack");
    // The streams, bucket and tables outlive their stack (DeletionPolicy Retain), in
    // moto as on AWS: delete them as an operator would. moto keeps the key.
    let kinesis = aws_sdk_kinesis::Client::from_conf(
        aws_sdk_kinesis::config::Builder::from(aws.sdk_config())
            .endpoint_url(&moto)
            .build(),
    );
    for stream in [&outputs["TELEMETRY_STREAM"], &outputs["FILES_STREAM"]] {
        let _ = kinesis.delete_stream().stream_name(stream).send().await;
    }
    stack::delete_bucket(&aws, &outputs["BUCKET"]).await;
    for (variable, table) in &outputs {
        if variable.ends_with("_TABLE") {
            stack::delete_table(&aws, table).await;
            stack::delete_table(&aws, &format!("{table}-workers")).await;
        }
    }
}
