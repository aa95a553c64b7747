//! S3 calls of setup.

use aws_sdk_s3::Client;
use aws_sdk_s3::operation::create_bucket::CreateBucketError;
use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
use pipeline_runtime::error::describe;

use super::{Outcome, SetupError};

/// The IAM actions of the calls below (HeadBucket is authorized as ListBucket).
pub const IAM_ACTIONS: &[&str] = &["s3:CreateBucket", "s3:ListBucket"];

/// Creates the bucket unless this account already has it.
pub async fn ensure_bucket(client: &Client, bucket: &str, region: &str) -> Result<Outcome, SetupError> {
    let resource = format!("S3 bucket {bucket}");
    if client.head_bucket().bucket(bucket).send().await.is_ok() {
        return Ok(Outcome::Exists(resource));
    }
    let mut request = client.create_bucket().bucket(bucket);
    // us-east-1 is the one region that refuses an explicit location constraint.
    if region != "us-east-1" {
        request = request.create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(region))
                .build(),
        );
    }
    match request.send().await {
        Ok(_) => Ok(Outcome::Created(resource)),
        Err(error)
            if matches!(
                error.as_service_error(),
                Some(CreateBucketError::BucketAlreadyOwnedByYou(_))
            ) =>
        {
            Ok(Outcome::Exists(resource))
        }
        Err(error) => Err(SetupError::Aws {
            resource,
            message: describe(&error),
        }),
    }
}
