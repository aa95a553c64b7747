//! The one AWS call of the PostgreSQL back end: reading a batch file whole from the
//! lake, as Redshift's COPY would.

use aws_sdk_s3::config::http::HttpResponse;
use bytes::Bytes;
use pipeline_runtime::error::{AwsError, ErrorKind};

/// The IAM action of the call below.
pub const IAM_ACTIONS: &[&str] = &["s3:GetObject"];

/// Why a batch file could not be read.
pub(super) enum GetError {
    /// GetObject failed, classified.
    Object(AwsError),
    /// The body broke off while downloading.
    BrokeOff(String),
}

/// GetObject of `s3://bucket/key`, its body read to the end. A batch file is at most
/// the s3-connector's flush size (tens of MiB), so whole in memory is fine.
pub(super) async fn get(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Result<Bytes, GetError> {
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

/// A failed GetObject of a batch file, classified: a missing object is permanent (a
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
