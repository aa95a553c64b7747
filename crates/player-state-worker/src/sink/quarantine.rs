//! The lake write of quarantined records.

use bytes::Bytes;
use pipeline_runtime::AwsError;
use pipeline_runtime::s3::Lake;

/// What the functions of this module need (and, with SSE-KMS, `kms:GenerateDataKey`).
pub const IAM_ACTIONS: &[&str] = &["s3:PutObject"];

/// PutObject of one gzipped JSON-lines file of rejected records at `key` under
/// `errors/`, encrypted as the lake says. One request: a file holds one batch's rejects
/// (a GetRecords answer is at most 10 MB before gzip), far under the 5 GB of a single
/// PUT. The same key and bytes on a retry, so a write that succeeded unseen is
/// repeated harmlessly.
pub async fn put_file(lake: &Lake, key: &str, body: Bytes) -> Result<(), AwsError> {
    lake.put_gzip_json_lines(key, body).await
}
