//! Kinesis calls of setup.

use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::operation::create_stream::CreateStreamError;
use aws_sdk_kinesis::types::StreamStatus;
use pipeline_runtime::error::describe;

use super::{Outcome, SetupError, StreamSpec};

/// The IAM actions of the calls below.
pub const IAM_ACTIONS: &[&str] = &["kinesis:CreateStream", "kinesis:DescribeStreamSummary"];

/// Real Kinesis takes about 30 s to create a stream.
const ACTIVE_TIMEOUT: Duration = Duration::from_secs(120);

/// Creates the stream unless it exists, then waits until it is active.
pub async fn ensure_stream(client: &Client, stream: &StreamSpec) -> Result<Outcome, SetupError> {
    let resource = format!("Kinesis stream {}", stream.name);
    let created = match client
        .create_stream()
        .stream_name(&stream.name)
        .shard_count(stream.shards)
        .send()
        .await
    {
        Ok(_) => true,
        Err(error)
            if matches!(
                error.as_service_error(),
                Some(CreateStreamError::ResourceInUseException(_))
            ) =>
        {
            false
        }
        Err(error) => {
            return Err(SetupError::Aws {
                resource,
                message: describe(&error),
            });
        }
    };
    let open_shards = wait_active(client, &stream.name, &resource).await?;
    if created {
        return Ok(Outcome::Created(format!("{resource} ({} shards)", stream.shards)));
    }
    let note = if open_shards == stream.shards {
        String::new()
    } else {
        format!("; asked for {}, setup never reshards", stream.shards)
    };
    Ok(Outcome::Exists(format!("{resource} ({open_shards} open shards{note})")))
}

/// Waits for ACTIVE and returns the number of open shards.
async fn wait_active(client: &Client, name: &str, resource: &str) -> Result<i32, SetupError> {
    let started = tokio::time::Instant::now();
    loop {
        let summary = client
            .describe_stream_summary()
            .stream_name(name)
            .send()
            .await
            .map_err(|e| SetupError::Aws {
                resource: resource.to_string(),
                message: describe(&e),
            })?;
        if let Some(description) = summary.stream_description_summary()
            && *description.stream_status() == StreamStatus::Active
        {
            return Ok(description.open_shard_count());
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
