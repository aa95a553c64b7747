//! DynamoDB calls of setup.

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::create_table::CreateTableError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, StreamSpecification, StreamViewType, TableStatus,
    TimeToLiveSpecification, TimeToLiveStatus,
};
use pipeline_runtime::error::describe;
use pipeline_runtime::resources::{KeyAttribute, TableSpec, check_table_shape};

use super::{Outcome, SetupError};

/// The IAM actions of the calls below.
pub const IAM_ACTIONS: &[&str] = &[
    "dynamodb:CreateTable",
    "dynamodb:DescribeTable",
    "dynamodb:DescribeTimeToLive",
    "dynamodb:UpdateTimeToLive",
];

const ACTIVE_TIMEOUT: Duration = Duration::from_secs(120);

/// Creates the table (on-demand billing) unless it exists, waits until it is active,
/// checks its keys and stream, and turns TTL on where the spec has it.
pub async fn ensure_table(client: &Client, spec: &TableSpec) -> Result<Vec<Outcome>, SetupError> {
    let resource = format!("DynamoDB table {}", spec.name);
    let aws_error = |message: String| SetupError::Aws {
        resource: resource.clone(),
        message,
    };
    let created = create_table(client, spec).await.map_err(aws_error)?;
    wait_active(client, spec, &resource).await?;
    let mut outcomes = vec![if created {
        Outcome::Created(resource.clone())
    } else {
        Outcome::Exists(resource.clone())
    }];
    if let Some(attribute) = spec.ttl_attribute {
        let description = client
            .describe_time_to_live()
            .table_name(&spec.name)
            .send()
            .await
            .map_err(|e| aws_error(describe(&e)))?;
        let current = description.time_to_live_description();
        let status = current.and_then(|d| d.time_to_live_status());
        let enabled = matches!(status, Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling));
        match current.and_then(|d| d.attribute_name()) {
            Some(name) if enabled && name == attribute => {}
            Some(name) if enabled => {
                return Err(SetupError::Mismatch {
                    resource,
                    problem: format!("has TTL on {name}, not {attribute}"),
                });
            }
            _ => {
                client
                    .update_time_to_live()
                    .table_name(&spec.name)
                    .time_to_live_specification(
                        TimeToLiveSpecification::builder()
                            .enabled(true)
                            .attribute_name(attribute)
                            .build()
                            .map_err(|e| aws_error(e.to_string()))?,
                    )
                    .send()
                    .await
                    .map_err(|e| aws_error(describe(&e)))?;
                outcomes.push(Outcome::Changed(format!("{resource}: TTL on {attribute}")));
            }
        }
    }
    Ok(outcomes)
}

/// Returns whether the table was created (false: it existed).
async fn create_table(client: &Client, spec: &TableSpec) -> Result<bool, String> {
    let mut keys = vec![(spec.hash_key, KeyType::Hash)];
    if let Some(range) = spec.range_key {
        keys.push((range, KeyType::Range));
    }
    let mut request = client
        .create_table()
        .table_name(&spec.name)
        .billing_mode(BillingMode::PayPerRequest);
    for (KeyAttribute { name, kind }, key_type) in keys {
        request = request
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(name)
                    .attribute_type(kind.scalar_type())
                    .build()
                    .map_err(|e| e.to_string())?,
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(name)
                    .key_type(key_type)
                    .build()
                    .map_err(|e| e.to_string())?,
            );
    }
    if spec.stream {
        request = request.stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::NewAndOldImages)
                .build()
                .map_err(|e| e.to_string())?,
        );
    }
    match request.send().await {
        Ok(_) => Ok(true),
        Err(error)
            if matches!(
                error.as_service_error(),
                Some(CreateTableError::ResourceInUseException(_))
            ) =>
        {
            Ok(false)
        }
        Err(error) => Err(describe(&error)),
    }
}

/// Waits for ACTIVE, then checks keys and stream against the spec.
async fn wait_active(client: &Client, spec: &TableSpec, resource: &str) -> Result<(), SetupError> {
    let started = tokio::time::Instant::now();
    loop {
        let output = client
            .describe_table()
            .table_name(&spec.name)
            .send()
            .await
            .map_err(|e| SetupError::Aws {
                resource: resource.to_string(),
                message: describe(&e),
            })?;
        if let Some(table) = output.table()
            && table.table_status() == Some(&TableStatus::Active)
        {
            return check_table_shape(table, spec).map_err(|problem| SetupError::Mismatch {
                resource: resource.to_string(),
                problem,
            });
        }
        if started.elapsed() > ACTIVE_TIMEOUT {
            return Err(SetupError::NotActive {
                resource: resource.to_string(),
                seconds: ACTIVE_TIMEOUT.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
