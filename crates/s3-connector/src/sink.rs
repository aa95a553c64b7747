//! Every AWS call of the s3-connector's output, one function each: the batch files to
//! the lake and the pointers to the `files` stream. (The consumer's own calls, reading
//! the telemetry stream and the lease tables, are in `shard-consumer`.)

use aws_sdk_kinesis::primitives::Blob;
use bytes::Bytes;
use event_model::FilePointer;
use pipeline_runtime::AwsClients;
use pipeline_runtime::error::AwsError;
use pipeline_runtime::s3::Lake;

/// The IAM actions the functions of this module need.
pub const IAM_ACTIONS: &[&str] = &["s3:PutObject", "kinesis:PutRecord"];

/// The lake's bucket and the `files` stream.
pub struct Sink {
    lake: Lake,
    kinesis: aws_sdk_kinesis::Client,
    files_stream: String,
}

impl Sink {
    pub fn new(aws: &AwsClients, bucket: &str, sse_kms_key_id: Option<&str>, files_stream: &str) -> Self {
        Self {
            lake: Lake {
                s3: aws.s3(),
                bucket: bucket.to_string(),
                sse_kms_key_id: sse_kms_key_id.map(str::to_string),
            },
            kinesis: aws.kinesis(),
            files_stream: files_stream.to_string(),
        }
    }

    /// The lake's bucket, which the pointers name.
    pub fn bucket(&self) -> &str {
        &self.lake.bucket
    }

    /// S3 PutObject of one gzipped JSON-lines batch file, SSE-KMS with the configured
    /// key if any. One request: a file is at most `BATCH_MAX_KIB` (4 GiB) uncompressed,
    /// under PutObject's 5 GB limit, so no multipart upload. The same key and bytes on
    /// a retry, so a write that succeeded unseen is repeated harmlessly.
    pub async fn put_batch_file(&self, key: &str, body: Bytes) -> Result<(), AwsError> {
        self.lake.put_gzip_json_lines(key, body).await
    }

    /// Kinesis PutRecord of one pointer (a JSON document under 1 KiB, far below the
    /// 1 MiB record limit) on the `files` stream. The partition key is the pointer's
    /// source shard, so one shard's pointers stay in order on one `files` shard.
    pub async fn publish_pointer(&self, pointer: &FilePointer) -> Result<(), AwsError> {
        self.kinesis
            .put_record()
            .stream_name(&self.files_stream)
            .partition_key(&pointer.shard)
            .data(Blob::new(pointer.to_json()))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| AwsError::from_sdk("kinesis:PutRecord", e))
    }
}
