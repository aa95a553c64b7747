//! Writing the objects of the data lake: one function for every service that writes one.

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption;
use bytes::Bytes;

use crate::error::AwsError;

/// The IAM action of the call below.
pub const IAM_ACTIONS: &[&str] = &["s3:PutObject"];

/// Gzipped JSON lines: the `Content-Encoding` says gzip, the type says what is inside.
pub const JSON_LINES: &str = "application/x-ndjson";

/// Where the lake is and how its objects are encrypted.
#[derive(Debug, Clone)]
pub struct Lake {
    pub s3: aws_sdk_s3::Client,
    pub bucket: String,
    /// SSE-KMS key for every object written; `None` = the bucket's default encryption.
    pub sse_kms_key_id: Option<String>,
}

impl Lake {
    /// PutObject of a gzipped JSON-lines body. The same key and bytes on a retry, so a
    /// write that succeeded unseen is repeated harmlessly.
    pub async fn put_gzip_json_lines(&self, key: &str, body: Bytes) -> Result<(), AwsError> {
        self.put(key, body, JSON_LINES, Some("gzip")).await
    }

    /// PutObject of a JSON document.
    pub async fn put_json(&self, key: &str, body: Bytes) -> Result<(), AwsError> {
        self.put(key, body, "application/json", None).await
    }

    async fn put(&self, key: &str, body: Bytes, content_type: &str, encoding: Option<&str>) -> Result<(), AwsError> {
        let kms = self.sse_kms_key_id.as_ref();
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(body))
            .content_type(content_type)
            .set_content_encoding(encoding.map(str::to_string))
            .set_server_side_encryption(kms.map(|_| ServerSideEncryption::AwsKms))
            .set_ssekms_key_id(kms.cloned())
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("s3:PutObject", e))?;
        Ok(())
    }
}
