//! Writing the objects of the data lake, and reading one whole: one function each for
//! every service and command that does.

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption;
use bytes::Bytes;

use crate::error::{AwsError, ErrorKind};

/// The IAM actions of the calls below.
pub const IAM_ACTIONS: &[&str] = &["s3:PutObject", "s3:GetObject", "s3:ListBucket"];

/// Why an object could not be read whole.
#[derive(Debug)]
pub enum GetError {
    /// GetObject failed, classified.
    Object(AwsError),
    /// The body broke off while downloading (the object may well be whole).
    BrokeOff(String),
}

/// GetObject of `s3://bucket/key`, its body read to the end. S3 sends the body as a
/// stream after the answer's headers, so it can break off after the call succeeded.
/// Whole in memory: for objects of tens of MiB at most (a batch file, a dead letter).
pub async fn get_whole(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Result<Bytes, GetError> {
    let object = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| GetError::Object(get_object_error(e)))?;
    let body = object
        .body
        .collect()
        .await
        .map_err(|e| GetError::BrokeOff(e.to_string()))?;
    Ok(body.into_bytes())
}

/// A failed GetObject, classified: a missing object is permanent (a
/// pointer is written after its file, and S3 reads after writes, so the file was
/// deleted or never written); other failures keep the kind of their error code and
/// status.
fn get_object_error(
    error: aws_sdk_s3::error::SdkError<aws_sdk_s3::operation::get_object::GetObjectError, HttpResponse>,
) -> AwsError {
    if error.as_service_error().is_some_and(|e| e.is_no_such_key()) {
        AwsError::with_kind("s3:GetObject", ErrorKind::Permanent, &error)
    } else {
        AwsError::from_sdk("s3:GetObject", error)
    }
}

/// An object a listing found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub size_bytes: u64,
}

/// ListObjectsV2 of every key under `prefix`, in key order. S3 answers at most 1000
/// keys a page; the next page is asked for with the page's continuation token until
/// there is none.
pub async fn list(s3: &aws_sdk_s3::Client, bucket: &str, prefix: &str) -> Result<Vec<Listed>, AwsError> {
    let mut listed = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = s3
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_continuation_token(token.take())
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("s3:ListBucket", e))?;
        listed.extend(page.contents().iter().filter_map(|object| {
            Some(Listed {
                key: object.key()?.to_string(),
                size_bytes: u64::try_from(object.size().unwrap_or(0)).unwrap_or(0),
            })
        }));
        match page.next_continuation_token() {
            Some(next) => token = Some(next.to_string()),
            None => return Ok(listed),
        }
    }
}

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
        self.put(key, body, JSON_LINES, Some("gzip")).await.map(drop)
    }

    /// PutObject of a JSON document.
    pub async fn put_json(&self, key: &str, body: Bytes) -> Result<(), AwsError> {
        self.put(key, body, "application/json", None).await.map(drop)
    }

    /// Writes gzipped JSON lines over the object at `key` (S3 replaces it whole: a
    /// reader sees the old object or the new one), only while its ETag is still
    /// `if_match` when given (else S3 answers 412); answers the new version's id in a
    /// versioned bucket, where the old version is kept until deleted.
    pub async fn replace_gzip_json_lines(
        &self,
        key: &str,
        body: Bytes,
        if_match: Option<&str>,
    ) -> Result<Option<String>, AwsError> {
        self.put_if(key, body, JSON_LINES, Some("gzip"), if_match).await
    }

    async fn put(
        &self,
        key: &str,
        body: Bytes,
        content_type: &str,
        encoding: Option<&str>,
    ) -> Result<Option<String>, AwsError> {
        self.put_if(key, body, content_type, encoding, None).await
    }

    /// The version id of what was written, in a versioned bucket.
    async fn put_if(
        &self,
        key: &str,
        body: Bytes,
        content_type: &str,
        encoding: Option<&str>,
        if_match: Option<&str>,
    ) -> Result<Option<String>, AwsError> {
        let kms = self.sse_kms_key_id.as_ref();
        let written = self
            .s3
            .put_object()
            .set_if_match(if_match.map(str::to_string))
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
        Ok(written.version_id)
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_s3::error::SdkError;
    use aws_sdk_s3::operation::get_object::GetObjectError;
    use aws_sdk_s3::types::error::NoSuchKey;
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::error::ErrorMetadata;

    use super::*;

    fn answer(status: u16) -> HttpResponse {
        HttpResponse::new(StatusCode::try_from(status).expect("status"), SdkBody::empty())
    }

    fn meta(code: &str) -> ErrorMetadata {
        ErrorMetadata::builder().code(code).message("as S3 said").build()
    }

    #[test]
    fn a_missing_batch_file_is_permanent_other_read_failures_keep_their_kind() {
        let missing = SdkError::service_error(
            GetObjectError::NoSuchKey(NoSuchKey::builder().meta(meta("NoSuchKey")).build()),
            answer(404),
        );
        assert_eq!(get_object_error(missing).kind, ErrorKind::Permanent);
        let slow_down = SdkError::service_error(GetObjectError::generic(meta("SlowDown")), answer(503));
        assert_eq!(get_object_error(slow_down).kind, ErrorKind::Throttled);
        let denied = SdkError::service_error(GetObjectError::generic(meta("AccessDenied")), answer(403));
        let denied = get_object_error(denied);
        assert_eq!(denied.kind, ErrorKind::Fatal);
        assert!(
            denied.explain().starts_with("permission s3:GetObject denied"),
            "{}",
            denied.explain()
        );
        let server = SdkError::service_error(GetObjectError::generic(meta("InternalError")), answer(500));
        assert_eq!(get_object_error(server).kind, ErrorKind::Transient);
    }
}
