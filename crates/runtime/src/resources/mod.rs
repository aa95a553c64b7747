//! The AWS resources the pipeline expects, and a check that they exist in the
//! expected shape. `pipelinectl setup` creates them; each service checks its own at
//! start so a wrong name fails fast with the name in the message. The tables every
//! shard consumer shares are described here; the live-state tables in the
//! `live-state` crate.

use std::fmt;

use aws_sdk_dynamodb::types::{KeyType, ScalarAttributeType, StreamViewType, TableDescription};

use crate::aws::AwsClients;
use crate::error::{AwsError, Classified, ErrorKind};
use crate::retry::{RetryPolicy, retry};

mod describe;

pub use describe::IAM_ACTIONS;

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

impl KeyAttribute {
    pub const fn string(name: &'static str) -> Self {
        Self {
            name,
            kind: KeyKind::String,
        }
    }

    pub const fn number(name: &'static str) -> Self {
        Self {
            name,
            kind: KeyKind::Number,
        }
    }
}

impl TableSpec {
    /// A table keyed by `hash_key` alone, without a stream or TTL.
    pub fn hash_keyed(name: &str, hash_key: KeyAttribute) -> Self {
        Self {
            name: name.to_string(),
            hash_key,
            range_key: None,
            stream: false,
            ttl_attribute: None,
        }
    }

    /// The worker table beside a shard consumer's lease table (hash key `workerId`):
    /// one entry per live worker, its heartbeat.
    pub fn worker_table(lease_table: &str) -> Self {
        Self::hash_keyed(&worker_table_name(lease_table), KeyAttribute::string("workerId"))
    }

    /// A lease table in the Java KCL 2.x layout (hash key `leaseKey`).
    pub fn lease_table(name: &str) -> Self {
        Self::hash_keyed(name, KeyAttribute::string("leaseKey"))
    }
}

/// The worker table that goes with a shard consumer's lease table.
pub fn worker_table_name(lease_table: &str) -> String {
    format!("{lease_table}-workers")
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
                transient: failure.kind().is_retryable(),
                problem: match failure {
                    Failure::Aws(error) => error.explain(),
                    Failure::Shape(text) => text,
                },
            });
        }
    }
    problems
}

/// Like [`verify`], as a `Result`; checks that failed for a passing reason are
/// repeated (under [`RetryPolicy::START`]) before they count, so a throttled start does
/// not fail a service whose resources are fine.
pub async fn require(aws: &AwsClients, resources: &[Resource]) -> Result<(), MissingResources> {
    let never = tokio_util::sync::CancellationToken::new();
    let checked = retry(&RetryPolicy::START, &never, || async {
        let problems = verify(aws, resources).await;
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Problems(problems))
        }
    })
    .await;
    checked.map_err(|e| MissingResources(e.into_error().0))
}

/// Problems of one round of checks, retried while all of them are passing.
struct Problems(Vec<Problem>);

impl Classified for Problems {
    fn kind(&self) -> ErrorKind {
        if self.0.iter().all(|p| p.transient) {
            ErrorKind::Transient
        } else {
            ErrorKind::Fatal
        }
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        MissingResources(self.0.clone()).fmt(f)
    }
}

/// Why one resource's check failed.
enum Failure {
    Aws(AwsError),
    /// It exists, in the wrong shape.
    Shape(String),
}

impl Failure {
    fn kind(&self) -> ErrorKind {
        match self {
            Failure::Aws(error) => error.kind,
            Failure::Shape(_) => ErrorKind::Fatal,
        }
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure::Shape(message)
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Self {
        Failure::Shape(message.to_string())
    }
}

impl From<AwsError> for Failure {
    fn from(error: AwsError) -> Self {
        Failure::Aws(error)
    }
}

async fn verify_one(aws: &AwsClients, resource: &Resource) -> Result<(), Failure> {
    match resource {
        Resource::Stream { name } => match describe::stream_status(aws, name).await?.as_str() {
            "ACTIVE" | "UPDATING" => Ok(()),
            other => Err(format!("status {other}").into()),
        },
        Resource::Bucket { name } => Ok(describe::head_bucket(aws, name).await?),
        Resource::Table(spec) => verify_table(aws, spec).await,
    }
}

async fn verify_table(aws: &AwsClients, spec: &TableSpec) -> Result<(), Failure> {
    let table = describe::table(aws, &spec.name).await?.ok_or("no table description")?;
    check_table_shape(&table, spec)?;
    if let Some(attribute) = spec.ttl_attribute {
        let description = describe::time_to_live(aws, &spec.name).await?;
        let on = description
            .as_ref()
            .and_then(|d| d.time_to_live_status())
            .is_some_and(|s| s.as_str() == "ENABLED" || s.as_str() == "ENABLING");
        let same = description.as_ref().and_then(|d| d.attribute_name()) == Some(attribute);
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
