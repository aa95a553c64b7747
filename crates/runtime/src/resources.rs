//! The AWS resources the pipeline expects, and a check that they exist in the
//! expected shape. `pipelinectl setup` creates them; each service checks its own at
//! start so a wrong name fails fast with the name in the message.

use std::fmt;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{KeyType, ScalarAttributeType, StreamViewType, TableDescription};
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::http::Response as HttpResponse;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::aws::AwsClients;
use crate::backoff::Backoff;

/// The type of a DynamoDB key attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    String,
    Number,
}

impl KeyKind {
    pub fn scalar_type(self) -> ScalarAttributeType {
        match self {
            KeyKind::String => ScalarAttributeType::S,
            KeyKind::Number => ScalarAttributeType::N,
        }
    }
}

/// A key attribute of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyAttribute {
    pub name: &'static str,
    pub kind: KeyKind,
}

/// What a DynamoDB table of the pipeline looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSpec {
    pub name: String,
    pub hash_key: KeyAttribute,
    pub range_key: Option<KeyAttribute>,
    /// Whether the table has a stream with old and new images.
    pub stream: bool,
    /// Attribute holding the expiry time (epoch seconds) when TTL is on.
    pub ttl_attribute: Option<&'static str>,
}

impl TableSpec {
    /// PlayerState: one item per present player, streamed to the level stage.
    pub fn player_state(name: &str) -> Self {
        Self {
            name: name.to_string(),
            hash_key: KeyAttribute {
                name: "playerId",
                kind: KeyKind::String,
            },
            range_key: None,
            stream: true,
            ttl_attribute: None,
        }
    }

    /// LevelState: one item per level with its player count.
    pub fn level_state(name: &str) -> Self {
        Self {
            name: name.to_string(),
            hash_key: KeyAttribute {
                name: "levelId",
                kind: KeyKind::String,
            },
            range_key: None,
            stream: false,
            ttl_attribute: None,
        }
    }

    /// Transitions: counts per time bucket (epoch ms of its start) and `from→to` pair.
    pub fn transitions(name: &str) -> Self {
        Self {
            name: name.to_string(),
            hash_key: KeyAttribute {
                name: "bucketStart",
                kind: KeyKind::Number,
            },
            range_key: Some(KeyAttribute {
                name: "transition",
                kind: KeyKind::String,
            }),
            stream: false,
            ttl_attribute: Some("expiresAt"),
        }
    }

    /// A lease table in the Java KCL 2.x layout (hash key `leaseKey`).
    pub fn lease_table(name: &str) -> Self {
        Self {
            name: name.to_string(),
            hash_key: KeyAttribute {
                name: "leaseKey",
                kind: KeyKind::String,
            },
            range_key: None,
            stream: false,
            ttl_attribute: None,
        }
    }
}

/// One resource of the pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    Stream { name: String },
    Bucket { name: String },
    Table(TableSpec),
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::Stream { name } => write!(f, "Kinesis stream {name}"),
            Resource::Bucket { name } => write!(f, "S3 bucket {name}"),
            Resource::Table(spec) => write!(f, "DynamoDB table {}", spec.name),
        }
    }
}

/// A resource that is missing or not as expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub resource: String,
    pub problem: String,
    /// The check itself failed for a passing reason (throttling, a server error, a
    /// timeout): the resource may well be fine.
    pub transient: bool,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.resource, self.problem)
    }
}

/// Problems found by [`verify`], as one error.
#[derive(Debug, thiserror::Error)]
#[error("{} resource problem(s): {}; create them with `pipelinectl setup`", .0.len(), .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct MissingResources(pub Vec<Problem>);

/// Checks that every resource exists, is active, and has the expected shape.
pub async fn verify(aws: &AwsClients, resources: &[Resource]) -> Vec<Problem> {
    let mut problems = Vec::new();
    for resource in resources {
        if let Err(failure) = verify_one(aws, resource).await {
            problems.push(Problem {
                resource: resource.to_string(),
                problem: failure.message,
                transient: failure.transient,
            });
        }
    }
    problems
}

/// How long a service's start waits out checks that fail for passing reasons.
const TRANSIENT_CHECK_BUDGET: Duration = Duration::from_secs(60);

/// Like [`verify`], as a `Result`; checks that failed for a passing reason are
/// repeated (for up to a minute) before they count, so a throttled start does not
/// fail a service whose resources are fine.
pub async fn require(aws: &AwsClients, resources: &[Resource]) -> Result<(), MissingResources> {
    let started = Instant::now();
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(8));
    loop {
        let problems = verify(aws, resources).await;
        if problems.is_empty() {
            return Ok(());
        }
        let delay = backoff.next_delay();
        if problems.iter().any(|p| !p.transient) || started.elapsed() + delay > TRANSIENT_CHECK_BUDGET {
            return Err(MissingResources(problems));
        }
        tracing::warn!(problems = %MissingResources(problems), "resource checks failed for a passing reason; checking again");
        tokio::time::sleep(delay).await;
    }
}

/// Why one resource's check failed.
struct Failure {
    message: String,
    transient: bool,
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Self {
            message,
            transient: false,
        }
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Self {
        Self::from(message.to_string())
    }
}

fn sdk_failure<E: ProvideErrorMetadata + std::error::Error + 'static>(error: SdkError<E, HttpResponse>) -> Failure {
    Failure {
        message: describe_sdk_error(&error),
        transient: is_transient(&error),
    }
}

/// Error codes AWS services answer when a caller is throttled.
pub const THROTTLING_CODES: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "LimitExceededException",
    "ThrottlingException",
    "Throttling",
    "RequestLimitExceeded",
    "SlowDown",
    "KMSThrottlingException",
];

/// Whether an SDK error is passing: throttling, a server error, a timeout or a
/// dropped connection (not a missing resource or a denied call).
pub fn is_transient<E: ProvideErrorMetadata>(error: &SdkError<E, HttpResponse>) -> bool {
    match error {
        SdkError::ServiceError(service) => {
            service.raw().status().is_server_error()
                || service
                    .err()
                    .code()
                    .is_some_and(|code| THROTTLING_CODES.contains(&code))
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => true,
        _ => false,
    }
}

async fn verify_one(aws: &AwsClients, resource: &Resource) -> Result<(), Failure> {
    match resource {
        Resource::Stream { name } => {
            let summary = aws
                .kinesis()
                .describe_stream_summary()
                .stream_name(name)
                .send()
                .await
                .map_err(sdk_failure)?;
            let status = summary
                .stream_description_summary()
                .map(|s| s.stream_status().as_str().to_string())
                .unwrap_or_default();
            match status.as_str() {
                "ACTIVE" | "UPDATING" => Ok(()),
                other => Err(format!("status {other}").into()),
            }
        }
        Resource::Bucket { name } => aws
            .s3()
            .head_bucket()
            .bucket(name)
            .send()
            .await
            .map(|_| ())
            .map_err(sdk_failure),
        Resource::Table(spec) => verify_table(aws, spec).await,
    }
}

async fn verify_table(aws: &AwsClients, spec: &TableSpec) -> Result<(), Failure> {
    let client = aws.dynamodb();
    let output = client
        .describe_table()
        .table_name(&spec.name)
        .send()
        .await
        .map_err(sdk_failure)?;
    let table = output.table().ok_or("no table description")?;
    check_table_shape(table, spec)?;
    if let Some(attribute) = spec.ttl_attribute {
        let ttl = client
            .describe_time_to_live()
            .table_name(&spec.name)
            .send()
            .await
            .map_err(sdk_failure)?;
        let description = ttl.time_to_live_description();
        let on = description
            .and_then(|d| d.time_to_live_status())
            .is_some_and(|s| s.as_str() == "ENABLED" || s.as_str() == "ENABLING");
        let same = description.and_then(|d| d.attribute_name()) == Some(attribute);
        if !(on && same) {
            return Err(format!("needs TTL on attribute {attribute}").into());
        }
    }
    Ok(())
}

/// Checks the keys (names and types) and the stream of a described table against `spec`.
pub fn check_table_shape(table: &TableDescription, spec: &TableSpec) -> Result<(), String> {
    let key_of = |key_type: &KeyType| {
        table
            .key_schema()
            .iter()
            .find(|k| k.key_type() == key_type)
            .map(|k| k.attribute_name().to_string())
    };
    let type_of = |attribute: &str| {
        table
            .attribute_definitions()
            .iter()
            .find(|d| d.attribute_name() == attribute)
            .map(|d| d.attribute_type().clone())
    };
    for (key_type, expected) in [(KeyType::Hash, Some(spec.hash_key)), (KeyType::Range, spec.range_key)] {
        let actual = key_of(&key_type);
        match (expected, actual) {
            (None, None) => {}
            (Some(expected), Some(actual)) if expected.name == actual => {
                if type_of(&actual) != Some(expected.kind.scalar_type()) {
                    return Err(format!("key {actual} has the wrong type"));
                }
            }
            (expected, actual) => {
                return Err(format!(
                    "{} key is {actual:?}, expected {:?}",
                    key_type.as_str(),
                    expected.map(|k| k.name)
                ));
            }
        }
    }
    if spec.stream {
        let stream = table.stream_specification();
        let enabled = stream.is_some_and(|s| s.stream_enabled());
        let view = stream.and_then(|s| s.stream_view_type());
        if !enabled || view != Some(&StreamViewType::NewAndOldImages) {
            return Err("needs a stream with NEW_AND_OLD_IMAGES".into());
        }
    }
    Ok(())
}

/// A short description of an SDK error: the service's error code when there is one.
pub fn describe_sdk_error<E, R>(error: &SdkError<E, R>) -> String
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
