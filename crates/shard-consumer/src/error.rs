//! Errors of the consumer. AWS failures are classified by the runtime's one classifier
//! ([`AwsError`], [`ErrorKind`]); what only a stream read can mean (an expired iterator,
//! trimmed data, a vanished shard) is read from the SDK's typed error variants here.

pub use pipeline_runtime::error::{AwsError, Classified, ErrorKind};

/// Why a shard could not be read at a position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The iterator outlived its five minutes: get a new one at the same position.
    #[error("shard iterator expired")]
    IteratorExpired,
    /// The position is older than the stream's retention: its records are gone.
    #[error("records trimmed: {0}")]
    Trimmed(AwsError),
    /// The shard, or its stream, does not exist (any more).
    #[error("shard not found: {0}")]
    ShardNotFound(AwsError),
    #[error(transparent)]
    Aws(#[from] AwsError),
}

impl Classified for ReadError {
    fn kind(&self) -> ErrorKind {
        match self {
            ReadError::IteratorExpired => ErrorKind::Transient,
            ReadError::Trimmed(_) | ReadError::ShardNotFound(_) => ErrorKind::Permanent,
            ReadError::Aws(error) => error.kind,
        }
    }
}
