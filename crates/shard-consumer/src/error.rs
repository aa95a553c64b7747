//! AWS errors, classified once so callers decide by kind, never by message text.

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

/// What an AWS failure means to a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Over the throughput limit: back off and retry.
    Throttled,
    /// A conditional write lost: for a lease, someone else has it now.
    Conflict,
    /// The shard iterator is older than its lifetime: get a new one.
    ExpiredIterator,
    /// The data asked for is past retention.
    Trimmed,
    /// The stream, table or shard does not exist.
    NotFound,
    /// A transient failure (timeout, 5xx, connection): retry.
    Retryable,
    /// Retrying will not help (bad request, access denied).
    Fatal,
}

/// A failed AWS call.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{operation}: {message}")]
pub struct AwsError {
    pub kind: ErrorKind,
    pub operation: &'static str,
    pub message: String,
}

impl AwsError {
    pub fn is_retryable(&self) -> bool {
        matches!(self.kind, ErrorKind::Throttled | ErrorKind::Retryable)
    }
}

/// Classifies an SDK error by its service error code (a structured field, stable
/// across SDK versions) or by the transport failure.
pub fn classify<E>(operation: &'static str, error: SdkError<E, HttpResponse>) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let message = pipeline_runtime::resources::describe_sdk_error(&error);
    let kind = match &error {
        SdkError::ServiceError(service) => match service.err().code() {
            Some(code) if pipeline_runtime::resources::THROTTLING_CODES.contains(&code) => ErrorKind::Throttled,
            Some("ConditionalCheckFailedException" | "TransactionConflictException") => ErrorKind::Conflict,
            Some("ExpiredIteratorException") => ErrorKind::ExpiredIterator,
            Some("TrimmedDataAccessException") => ErrorKind::Trimmed,
            Some("ResourceNotFoundException") => ErrorKind::NotFound,
            Some("InternalServerError" | "InternalFailure" | "ServiceUnavailable" | "KMSInternalException") => {
                ErrorKind::Retryable
            }
            _ => {
                if service.raw().status().is_server_error() {
                    ErrorKind::Retryable
                } else {
                    ErrorKind::Fatal
                }
            }
        },
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => ErrorKind::Retryable,
        _ => ErrorKind::Fatal,
    };
    AwsError {
        kind,
        operation,
        message,
    }
}
