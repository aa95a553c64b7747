//! What a failure means to its caller, decided in one place: from the SDK's error
//! metadata (the service's error code, the field the SDK's typed variants are decoded
//! from) and the HTTP status, never from message text.
//!
//! Every AWS call of the pipeline goes through [`AwsError::from_sdk`]; the warehouse maps
//! SQLSTATE classes and Data API errors onto the same [`ErrorKind`]s. Callers then act
//! by kind: retry throttled and transient failures ([`crate::retry`]), re-read after a
//! failed condition, quarantine the input of a permanent failure, and exit on a fatal one.

use std::fmt;

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

/// What to do about a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorKind {
    /// Over a rate or capacity limit: wait, then try again.
    Throttled,
    /// A passing failure (a timeout, a dropped connection, a server error, a
    /// transaction that collided with another): try again.
    Transient,
    /// A conditional write did not apply. Never assume someone else won: the write may
    /// have been ours, applied before its response was lost. Re-read, then decide.
    ConditionFailed,
    /// This input can never succeed as it is (an invalid key, an item too large, a
    /// missing or corrupt object): quarantine it and move on.
    Permanent,
    /// This process cannot work (permissions, a missing resource, bad configuration):
    /// stop with a message naming the cause.
    Fatal,
}

impl ErrorKind {
    /// Throttled or transient: the same call may succeed later.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::Throttled | ErrorKind::Transient)
    }

    /// The kind of a failure of a request the caller made itself, not one an input
    /// decided: a permanent failure then cannot be skipped like a bad record, so it is fatal.
    pub fn of_own_request(self) -> ErrorKind {
        match self {
            ErrorKind::Permanent => ErrorKind::Fatal,
            kind => kind,
        }
    }

    /// For logs and metric dimensions.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Throttled => "throttled",
            ErrorKind::Transient => "transient",
            ErrorKind::ConditionFailed => "condition_failed",
            ErrorKind::Permanent => "permanent",
            ErrorKind::Fatal => "fatal",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Anything whose failure has a kind: what [`crate::retry::retry`] decides on.
pub trait Classified {
    fn kind(&self) -> ErrorKind;
}

impl Classified for ErrorKind {
    fn kind(&self) -> ErrorKind {
        *self
    }
}

/// Error codes of throttling, across the services the pipeline calls.
const THROTTLED: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "SlowDown",
    // Kinesis and DynamoDB Streams: the shard's read rate; DynamoDB: too many control-plane calls.
    "LimitExceededException",
    "KMSThrottlingException",
    // Redshift Data API: too many statements or sessions at once.
    "ActiveStatementsExceededException",
    "ActiveSessionsExceededException",
];

/// Error codes of passing failures that a status below 500 would not reveal.
const TRANSIENT: &[&str] = &[
    "TransactionConflictException",
    "TransactionInProgressException",
    "InternalServerError",
    "InternalFailure",
    "InternalError",
    "InternalServerException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "KMSInternalException",
    "RequestTimeout",
    "RequestTimeoutException",
    "DatabaseConnectionException",
    // The clock was stale; the SDK corrects its skew before its next attempt.
    "RequestExpired",
    "RequestTimeTooSkewed",
];

/// Error codes of a call the caller's credentials may not make.
const DENIED: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidAccessKeyId",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "MissingAuthenticationToken",
    "IncompleteSignature",
    "KMSAccessDeniedException",
];

/// Other error codes that mean this process cannot do its work.
const FATAL: &[&str] = &[
    // Refreshing credentials (a task role) are renewed before they expire: an expired
    // token means static credentials that will never work again; a restart reloads them.
    "ExpiredToken",
    "ExpiredTokenException",
    "KMSDisabledException",
    "KMSNotFoundException",
    "KMSInvalidStateException",
    "KMSOptInRequired",
    "ResourceNotFoundException",
    "NoSuchBucket",
    "TableNotFoundException",
];

/// Error codes of a failed condition.
const CONDITION_FAILED: &[&str] = &["ConditionalCheckFailedException", "PreconditionFailed"];

/// Classifies a service's answer from its error code and HTTP status.
///
/// An unknown code with a 4xx status is [`ErrorKind::Permanent`]: the request as made
/// cannot succeed. Callers whose request is their own (a lease write, a describe) rather
/// than their input's treat a permanent failure as fatal.
pub fn classify_code(code: Option<&str>, status: Option<u16>) -> ErrorKind {
    if let Some(code) = code {
        if THROTTLED.contains(&code) {
            return ErrorKind::Throttled;
        }
        if CONDITION_FAILED.contains(&code) {
            return ErrorKind::ConditionFailed;
        }
        if TRANSIENT.contains(&code) {
            return ErrorKind::Transient;
        }
        if DENIED.contains(&code) || FATAL.contains(&code) {
            return ErrorKind::Fatal;
        }
    }
    match status {
        Some(429) => ErrorKind::Throttled,
        // moto answers a denied DynamoDB call with a 403 and an XML body the JSON
        // protocol cannot decode into a code: the status alone must say "denied".
        Some(401 | 403) => ErrorKind::Fatal,
        Some(status) if status >= 500 => ErrorKind::Transient,
        Some(status) if status >= 400 => ErrorKind::Permanent,
        // A code we do not know without a status cannot happen on the wire; be safe.
        _ if code.is_some() => ErrorKind::Permanent,
        _ => ErrorKind::Transient,
    }
}

/// The kind of any SDK error.
pub fn classify<E: ProvideErrorMetadata>(error: &SdkError<E, HttpResponse>) -> ErrorKind {
    match error {
        SdkError::ServiceError(service) => classify_code(service.err().code(), Some(service.raw().status().as_u16())),
        // No answer, or one that could not be read (moto's HTML 500): the service may be fine.
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => ErrorKind::Transient,
        // The request could not even be built: a bug or a bad setting, not a passing state.
        SdkError::ConstructionFailure(_) => ErrorKind::Fatal,
        _ => ErrorKind::Transient,
    }
}

/// A cancelled TransactWriteItems, from its cancellation reasons (one per item, in
/// request order): a failed condition anywhere means re-read and decide; an invalid item
/// makes the transaction permanently impossible; throttling and conflicts pass.
pub fn classify_transaction(
    error: &SdkError<aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError, HttpResponse>,
) -> ErrorKind {
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
    let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) = error.as_service_error() else {
        return classify(error);
    };
    // Without a reason that decides, re-reading is the safe answer: a failed condition
    // only makes the caller read its state again and decide.
    let mut kind = None;
    for reason in cancelled.cancellation_reasons() {
        let this = match reason.code() {
            Some("ValidationError" | "ItemCollectionSizeLimitExceeded") => ErrorKind::Permanent,
            Some("ConditionalCheckFailed") => ErrorKind::ConditionFailed,
            Some("ThrottlingError" | "ProvisionedThroughputExceeded" | "RequestLimitExceeded") => ErrorKind::Throttled,
            Some("TransactionConflict") => ErrorKind::Transient,
            // "None": this item was fine.
            _ => continue,
        };
        kind = Some(kind.map_or(this, |k| worse(k, this)));
    }
    kind.unwrap_or(ErrorKind::ConditionFailed)
}

/// What a TransactWriteItems came to: applied (`true`), cancelled by a failed
/// condition (`false`: re-read and decide), or an error of the kind
/// [`classify_transaction`] gives.
pub fn transaction_applied<T>(
    result: Result<
        T,
        SdkError<aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError, HttpResponse>,
    >,
) -> Result<bool, AwsError> {
    match result {
        Ok(_) => Ok(true),
        Err(error) => match classify_transaction(&error) {
            ErrorKind::ConditionFailed => Ok(false),
            kind => Err(AwsError::with_kind("dynamodb:TransactWriteItems", kind, &error)),
        },
    }
}

/// Of two kinds, the one that decides what the caller does.
fn worse(a: ErrorKind, b: ErrorKind) -> ErrorKind {
    let rank = |k: ErrorKind| match k {
        ErrorKind::Transient => 0,
        ErrorKind::Throttled => 1,
        ErrorKind::ConditionFailed => 2,
        ErrorKind::Permanent => 3,
        ErrorKind::Fatal => 4,
    };
    if rank(b) > rank(a) { b } else { a }
}

/// A failed AWS call, classified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{operation}: {message}")]
pub struct AwsError {
    pub kind: ErrorKind,
    /// The call as IAM names its action, for example `kinesis:PutRecords` (so a denied
    /// call's message names the permission to grant).
    pub operation: &'static str,
    /// The service's error code, when it sent one.
    pub code: Option<String>,
    /// The HTTP status of the answer, when there was one.
    pub status: Option<u16>,
    /// What the service said, or what went wrong on the way.
    pub message: String,
}

impl Classified for AwsError {
    fn kind(&self) -> ErrorKind {
        self.kind
    }
}

impl AwsError {
    /// Classifies an SDK error of `operation`.
    pub fn from_sdk<E>(operation: &'static str, error: SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let kind = classify(&error);
        Self::with_kind(operation, kind, &error)
    }

    /// An SDK error whose kind the caller decided (from the operation's typed variants).
    pub fn with_kind<E>(operation: &'static str, kind: ErrorKind, error: &SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let (code, status) = match error {
            SdkError::ServiceError(service) => (
                service.err().code().map(str::to_string),
                Some(service.raw().status().as_u16()),
            ),
            _ => (None, None),
        };
        Self {
            kind,
            operation,
            code,
            status,
            message: describe(error),
        }
    }

    /// A failure the caller found in an answer that the SDK took as a success.
    pub fn new(operation: &'static str, kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            operation,
            code: None,
            status: None,
            message: message.into(),
        }
    }

    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }

    /// The caller's credentials may not make this call.
    pub fn is_denied(&self) -> bool {
        matches!(self.status, Some(401 | 403)) || self.code.as_deref().is_some_and(|c| DENIED.contains(&c))
    }

    /// For an operator: the call and what the service said, and, when the call was
    /// denied, the IAM action to grant.
    pub fn explain(&self) -> String {
        if self.is_denied() {
            format!(
                "permission {} denied (grant it in the task role's policy): {}",
                self.operation, self.message
            )
        } else {
            self.to_string()
        }
    }
}

/// A short description of an SDK error: the service's code and message when there are
/// any, the chain of causes otherwise.
pub fn describe<E, R>(error: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: fmt::Debug,
{
    match error {
        SdkError::ServiceError(service) => {
            let inner = service.err();
            match (inner.code(), inner.message()) {
                (Some(code), Some(message)) => format!("{code}: {message}"),
                (Some(code), None) => code.to_string(),
                _ => inner.to_string(),
            }
        }
        other => {
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(cause) = source {
                text.push_str(": ");
                text.push_str(&cause.to_string());
                source = cause.source();
            }
            text
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_decide_before_statuses() {
        assert_eq!(
            classify_code(Some("ProvisionedThroughputExceededException"), Some(400)),
            ErrorKind::Throttled
        );
        assert_eq!(classify_code(Some("SlowDown"), Some(503)), ErrorKind::Throttled);
        assert_eq!(
            classify_code(Some("ConditionalCheckFailedException"), Some(400)),
            ErrorKind::ConditionFailed
        );
        assert_eq!(
            classify_code(Some("TransactionConflictException"), Some(400)),
            ErrorKind::Transient
        );
        assert_eq!(
            classify_code(Some("AccessDeniedException"), Some(400)),
            ErrorKind::Fatal
        );
        assert_eq!(
            classify_code(Some("ResourceNotFoundException"), Some(400)),
            ErrorKind::Fatal
        );
        assert_eq!(
            classify_code(Some("ValidationException"), Some(400)),
            ErrorKind::Permanent
        );
        assert_eq!(classify_code(Some("NoSuchKey"), Some(404)), ErrorKind::Permanent);
    }

    #[test]
    fn statuses_decide_without_a_known_code() {
        assert_eq!(
            classify_code(None, Some(403)),
            ErrorKind::Fatal,
            "moto's XML AccessDenied"
        );
        assert_eq!(classify_code(None, Some(500)), ErrorKind::Transient);
        assert_eq!(classify_code(Some("Whatever"), Some(502)), ErrorKind::Transient);
        assert_eq!(classify_code(None, Some(429)), ErrorKind::Throttled);
        assert_eq!(classify_code(Some("Whatever"), Some(400)), ErrorKind::Permanent);
        assert_eq!(classify_code(None, None), ErrorKind::Transient);
    }

    mod sdk_values {
        //! Real SDK error values, built as the SDK's deserializers build them: the typed
        //! variant with its error metadata (code and message), and the raw response.
        use aws_sdk_dynamodb::operation::put_item::PutItemError;
        use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
        use aws_sdk_dynamodb::types::CancellationReason;
        use aws_sdk_dynamodb::types::error::{ConditionalCheckFailedException, TransactionCanceledException};
        use aws_sdk_kinesis::operation::get_records::GetRecordsError;
        use aws_sdk_kinesis::types::error::ProvisionedThroughputExceededException;
        use aws_smithy_runtime_api::client::result::SdkError;
        use aws_smithy_runtime_api::http::StatusCode;
        use aws_smithy_types::body::SdkBody;
        use aws_smithy_types::error::ErrorMetadata;

        use super::super::*;

        fn answer(status: u16) -> HttpResponse {
            HttpResponse::new(StatusCode::try_from(status).expect("status"), SdkBody::empty())
        }

        fn meta(code: &str) -> ErrorMetadata {
            ErrorMetadata::builder()
                .code(code)
                .message("as the service said")
                .build()
        }

        fn cancelled(codes: &[&str]) -> SdkError<TransactWriteItemsError, HttpResponse> {
            let mut exception = TransactionCanceledException::builder().meta(meta("TransactionCanceledException"));
            for code in codes {
                exception = exception.cancellation_reasons(CancellationReason::builder().code(*code).build());
            }
            SdkError::service_error(
                TransactWriteItemsError::TransactionCanceledException(exception.build()),
                answer(400),
            )
        }

        #[test]
        fn dynamodb_and_kinesis_errors() {
            let failed = SdkError::service_error(
                PutItemError::ConditionalCheckFailedException(
                    ConditionalCheckFailedException::builder()
                        .meta(meta("ConditionalCheckFailedException"))
                        .build(),
                ),
                answer(400),
            );
            assert_eq!(classify(&failed), ErrorKind::ConditionFailed);
            let invalid = SdkError::service_error(PutItemError::generic(meta("ValidationException")), answer(400));
            assert_eq!(classify(&invalid), ErrorKind::Permanent);
            let error = AwsError::from_sdk("dynamodb:PutItem", invalid);
            assert_eq!(
                (error.code.as_deref(), error.status, error.kind),
                (Some("ValidationException"), Some(400), ErrorKind::Permanent)
            );
            // moto's denial: a 403 whose XML body the JSON protocol reads no code from.
            let denied = SdkError::service_error(PutItemError::generic(ErrorMetadata::builder().build()), answer(403));
            let error = AwsError::from_sdk("dynamodb:PutItem", denied);
            assert_eq!(error.kind, ErrorKind::Fatal);
            assert!(error.explain().starts_with("permission dynamodb:PutItem denied"));
            let throttled = SdkError::service_error(
                GetRecordsError::ProvisionedThroughputExceededException(
                    ProvisionedThroughputExceededException::builder()
                        .meta(meta("ProvisionedThroughputExceededException"))
                        .build(),
                ),
                answer(400),
            );
            assert_eq!(classify(&throttled), ErrorKind::Throttled);
            let server = SdkError::service_error(GetRecordsError::generic(meta("InternalFailure")), answer(500));
            assert_eq!(classify(&server), ErrorKind::Transient);
        }

        #[test]
        fn a_cancelled_transaction_is_read_from_its_reasons() {
            assert_eq!(
                classify_transaction(&cancelled(&["None", "None", "ConditionalCheckFailed"])),
                ErrorKind::ConditionFailed
            );
            assert_eq!(
                classify_transaction(&cancelled(&["TransactionConflict", "None"])),
                ErrorKind::Transient
            );
            assert_eq!(
                classify_transaction(&cancelled(&["ThrottlingError", "None"])),
                ErrorKind::Throttled
            );
            assert_eq!(
                classify_transaction(&cancelled(&["ConditionalCheckFailed", "ValidationError"])),
                ErrorKind::Permanent
            );
            assert_eq!(
                classify_transaction(&cancelled(&["None", "None"])),
                ErrorKind::ConditionFailed,
                "no decisive reason: re-read"
            );
            // Without the reasons, the generic code would say "permanent": the reasons decide.
            assert_eq!(classify(&cancelled(&["ConditionalCheckFailed"])), ErrorKind::Permanent);
        }
    }
}
