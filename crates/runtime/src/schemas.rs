//! `EVENT_SCHEMAS` and `SCHEMA_MODE`: the game's JSON Schemas, read once at start from a
//! directory or an S3 prefix and compiled, for every service that validates telemetry
//! (they must agree on what is valid). A document that is not a usable schema stops
//! the start, naming it: a typo must not turn into every event of a type rejected, or
//! passed unchecked.

use std::path::{Path, PathBuf};

use clap::Args;
use event_model::schema::{EventSchemas, SchemaError, SchemaKey, SchemaMode};

use crate::error::AwsError;
use crate::s3::GetError;

/// The IAM actions of the calls below (through [`crate::s3::list`] and
/// [`crate::s3::get_whole`]).
pub const IAM_ACTIONS: &[&str] = &["s3:ListBucket", "s3:GetObject"];

/// Where the schemas are and how they apply.
#[derive(Debug, Clone, Args)]
pub struct SchemaArgs {
    /// JSON Schemas of the game's events: a directory or s3://bucket/prefix/, holding
    /// <app_name>/<event_type>.json (every version of the type) and
    /// <app_name>/<event_type>/<event_version>.json (one version, which wins). Read
    /// once at start; a document that is not a valid schema stops the start. `$ref`s
    /// resolve within a document only.
    #[arg(long, env = "EVENT_SCHEMAS", value_parser = parse_source)]
    pub event_schemas: Option<SchemaSource>,

    /// How the schemas apply: off (none is applied), known (an event whose type has a
    /// schema must match it, else it is rejected as schema_violation; other types pass)
    /// or strict (as known, and an event type without a schema is rejected as
    /// no_schema). known and strict need EVENT_SCHEMAS.
    #[arg(long, env = "SCHEMA_MODE", default_value = "off")]
    pub schema_mode: SchemaMode,
}

/// Where the schema documents are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaSource {
    Directory(PathBuf),
    S3 { bucket: String, prefix: String },
}

impl std::fmt::Display for SchemaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Directory(path) => write!(f, "{}", path.display()),
            Self::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

fn parse_source(text: &str) -> Result<SchemaSource, String> {
    let Some(location) = text.strip_prefix("s3://") else {
        if text.is_empty() {
            return Err("must not be empty".into());
        }
        return Ok(SchemaSource::Directory(PathBuf::from(text)));
    };
    let (bucket, prefix) = location.split_once('/').unwrap_or((location, ""));
    if bucket.is_empty() {
        return Err("s3://bucket/prefix/ names no bucket".into());
    }
    // The lake's bucket holds millions of objects: the schemas are under a prefix.
    if prefix.trim_matches('/').is_empty() {
        return Err("s3://bucket/prefix/ names no prefix (the schemas' folder, such as s3://bucket/schemas/)".into());
    }
    // Keys are matched under the prefix as a folder: `schemas` means `schemas/`.
    let prefix = match prefix {
        p if p.ends_with('/') => p.to_string(),
        p => format!("{p}/"),
    };
    Ok(SchemaSource::S3 {
        bucket: bucket.to_string(),
        prefix,
    })
}

/// Why the schemas could not be read; the service does not start.
#[derive(Debug, thiserror::Error)]
pub enum SchemaLoadError {
    #[error("SCHEMA_MODE={0} needs EVENT_SCHEMAS (a directory or s3://bucket/prefix/)")]
    NoSource(SchemaMode),
    #[error(
        "EVENT_SCHEMAS ({0}) holds no schema (<app_name>/<event_type>.json), so SCHEMA_MODE={1} would check nothing"
    )]
    Empty(SchemaSource, SchemaMode),
    #[error("EVENT_SCHEMAS: cannot read {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("EVENT_SCHEMAS: cannot list {location}: {error}")]
    List { location: SchemaSource, error: AwsError },
    #[error("EVENT_SCHEMAS: cannot read s3://{bucket}/{key}: {error}")]
    Get { bucket: String, key: String, error: String },
    #[error("EVENT_SCHEMAS: s3://{bucket}/{key} is not UTF-8")]
    NotText { bucket: String, key: String },
    #[error("EVENT_SCHEMAS ({location}): {error}")]
    Schema {
        location: SchemaSource,
        error: Box<SchemaError>,
    },
}

impl SchemaArgs {
    /// Reads and compiles every schema. With `SCHEMA_MODE=off` and schemas given, they
    /// are still read and checked, so a broken document shows before the mode is on.
    pub async fn load(&self, s3: &aws_sdk_s3::Client) -> Result<EventSchemas, SchemaLoadError> {
        let mode = self.schema_mode;
        let Some(source) = &self.event_schemas else {
            return match mode {
                SchemaMode::Off => Ok(EventSchemas::new(mode)),
                SchemaMode::Known | SchemaMode::Strict => Err(SchemaLoadError::NoSource(mode)),
            };
        };
        let documents = match source {
            SchemaSource::Directory(root) => read_directory(root)?,
            SchemaSource::S3 { bucket, prefix } => read_prefix(s3, source, bucket, prefix).await?,
        };
        compile(source, mode, documents)
    }
}

/// The schemas in the directory `root` (as `EVENT_SCHEMAS=<root>` reads them).
pub fn load_directory(root: &Path, mode: SchemaMode) -> Result<EventSchemas, SchemaLoadError> {
    let documents = read_directory(root)?;
    compile(&SchemaSource::Directory(root.to_path_buf()), mode, documents)
}

/// Compiles `documents` (path relative to `source`, text).
fn compile(
    source: &SchemaSource,
    mode: SchemaMode,
    documents: Vec<(String, String)>,
) -> Result<EventSchemas, SchemaLoadError> {
    let mut schemas = EventSchemas::new(mode);
    let invalid = |error| SchemaLoadError::Schema {
        location: source.clone(),
        error: Box::new(error),
    };
    for (path, text) in documents {
        if let Some(key) = SchemaKey::from_path(&path).map_err(invalid)? {
            schemas.add(key, &text).map_err(invalid)?;
        }
    }
    if schemas.is_empty() && mode != SchemaMode::Off {
        return Err(SchemaLoadError::Empty(source.clone(), mode));
    }
    tracing::info!(source = %source, schemas = schemas.len(), mode = %mode, "event schemas loaded");
    Ok(schemas)
}

/// Every file under `root`, by its `/`-separated path relative to it.
fn read_directory(root: &Path) -> Result<Vec<(String, String)>, SchemaLoadError> {
    let read_error = |path: &Path, error| SchemaLoadError::Read {
        path: path.display().to_string(),
        error,
    };
    let mut documents = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| read_error(&dir, e))? {
            let path = entry.map_err(|e| read_error(&dir, e))?.path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let Ok(relative) = path.strip_prefix(root) else {
                continue;
            };
            let parts: Vec<String> = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            let name = parts.join("/");
            if !name.ends_with(".json") {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(|e| read_error(&path, e))?;
            documents.push((name, text));
        }
    }
    documents.sort();
    Ok(documents)
}

/// Every object under `prefix`, by its key relative to it.
async fn read_prefix(
    s3: &aws_sdk_s3::Client,
    source: &SchemaSource,
    bucket: &str,
    prefix: &str,
) -> Result<Vec<(String, String)>, SchemaLoadError> {
    let keys: Vec<String> = crate::s3::list(s3, bucket, prefix)
        .await
        .map_err(|error| SchemaLoadError::List {
            location: source.clone(),
            error,
        })?
        .into_iter()
        .map(|object| object.key)
        .collect();
    let mut documents = Vec::new();
    for key in keys.into_iter().filter(|key| key.ends_with(".json")) {
        let get_error = |error: String| SchemaLoadError::Get {
            bucket: bucket.to_string(),
            key: key.clone(),
            error,
        };
        let body = match crate::s3::get_whole(s3, bucket, &key).await {
            Ok(body) => body,
            Err(GetError::Object(error)) => return Err(get_error(error.to_string())),
            Err(GetError::BrokeOff(error)) => return Err(get_error(error)),
        };
        let Ok(text) = String::from_utf8(body.to_vec()) else {
            return Err(SchemaLoadError::NotText {
                bucket: bucket.to_string(),
                key,
            });
        };
        let relative = key.strip_prefix(prefix).unwrap_or(&key).to_string();
        documents.push((relative, text));
    }
    Ok(documents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_is_a_directory_or_an_s3_prefix_as_a_folder() {
        assert_eq!(
            parse_source("sample-data/schemas"),
            Ok(SchemaSource::Directory("sample-data/schemas".into()))
        );
        assert_eq!(
            parse_source("s3://lake/schemas"),
            Ok(SchemaSource::S3 {
                bucket: "lake".into(),
                prefix: "schemas/".into()
            })
        );
        assert!(parse_source("s3://lake").is_err(), "the whole bucket");
        assert!(parse_source("s3://lake/").is_err(), "the whole bucket");
        assert!(parse_source("s3:///schemas").is_err());
        assert!(parse_source("").is_err());
    }

    #[test]
    fn a_directory_of_schemas_is_loaded_and_a_bad_one_stops_the_start_naming_it() {
        let dir = std::env::temp_dir().join(format!("schemas-{}", uuid_like()));
        std::fs::create_dir_all(dir.join("game/purchase")).expect("temp dir");
        std::fs::write(dir.join("game/death.json"), r#"{"required": ["event_data"]}"#).expect("write");
        std::fs::write(dir.join("game/purchase/2.json"), "{}").expect("write");
        std::fs::write(dir.join("README.md"), "not a schema").expect("write");
        let schemas = load_directory(&dir, SchemaMode::Known).expect("two schemas");
        assert_eq!(schemas.len(), 2);
        assert!(
            schemas
                .check("game", "death", "1", || serde_json::from_str(
                    r#"{"event_type": "death"}"#
                ))
                .is_err()
        );

        std::fs::write(dir.join("game/level_complete.json"), r#"{"minimum": "zero"}"#).expect("write");
        let error = load_directory(&dir, SchemaMode::Off).expect_err("a broken schema");
        assert!(
            error
                .to_string()
                .contains("game/level_complete.json: not a valid JSON Schema"),
            "{error}"
        );
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[tokio::test]
    async fn a_mode_that_checks_needs_schemas() {
        let s3 = offline_s3();
        let error = SchemaArgs {
            event_schemas: None,
            schema_mode: SchemaMode::Strict,
        }
        .load(&s3)
        .await
        .expect_err("no source");
        assert!(
            error.to_string().starts_with("SCHEMA_MODE=strict needs EVENT_SCHEMAS"),
            "{error}"
        );
        let empty = std::env::temp_dir().join(format!("schemas-{}", uuid_like()));
        std::fs::create_dir_all(&empty).expect("temp dir");
        let error = load_directory(&empty, SchemaMode::Known).expect_err("no schema in it");
        assert!(error.to_string().contains("holds no schema"), "{error}");
        std::fs::remove_dir_all(&empty).expect("clean up");
    }

    fn uuid_like() -> String {
        format!("{}-{}", std::process::id(), fastrand::u64(..))
    }

    /// A client that is never called: without a source, there is nothing to read.
    fn offline_s3() -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }
}
