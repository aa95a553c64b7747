//! The calls that look at a resource without touching it, one function each: what
//! the start-up checks of [`super`] ask AWS. Each is one small read per resource at
//! start, far below any rate limit.

use aws_sdk_dynamodb::types::{TableDescription, TimeToLiveDescription};

use crate::aws::AwsClients;
use crate::error::AwsError;

/// The IAM actions of the calls below (HeadBucket is authorized as ListBucket).
pub const IAM_ACTIONS: &[&str] = &[
    "kinesis:DescribeStreamSummary",
    "s3:ListBucket",
    "dynamodb:DescribeTable",
    "dynamodb:DescribeTimeToLive",
];

/// DescribeStreamSummary: the stream's status (`ACTIVE`, `CREATING`, …).
pub async fn stream_status(aws: &AwsClients, stream: &str) -> Result<String, AwsError> {
    let summary = aws
        .kinesis()
        .describe_stream_summary()
        .stream_name(stream)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("kinesis:DescribeStreamSummary", e))?;
    Ok(summary
        .stream_description_summary()
        .map(|s| s.stream_status().as_str().to_string())
        .unwrap_or_default())
}

/// HeadBucket: whether the bucket exists and this principal may list it.
pub async fn head_bucket(aws: &AwsClients, bucket: &str) -> Result<(), AwsError> {
    aws.s3()
        .head_bucket()
        .bucket(bucket)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| AwsError::from_sdk("s3:ListBucket", e))
}

/// DescribeTable: the table's keys and stream; `None` if DynamoDB sent no description.
pub async fn table(aws: &AwsClients, table: &str) -> Result<Option<TableDescription>, AwsError> {
    let output = aws
        .dynamodb()
        .describe_table()
        .table_name(table)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("dynamodb:DescribeTable", e))?;
    Ok(output.table)
}

/// DescribeTimeToLive: the table's TTL setting, if any.
pub async fn time_to_live(aws: &AwsClients, table: &str) -> Result<Option<TimeToLiveDescription>, AwsError> {
    let output = aws
        .dynamodb()
        .describe_time_to_live()
        .table_name(table)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("dynamodb:DescribeTimeToLive", e))?;
    Ok(output.time_to_live_description)
}
