//! Redshift's COPY manifest for a load, and where it is kept.

use event_model::FilePointer;
use pipeline_runtime::error::AwsError;
use pipeline_runtime::s3::Lake;
use serde::{Deserialize, Serialize};

use crate::WarehouseError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub entries: Vec<ManifestEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    pub url: String,
    /// COPY fails if a mandatory file is missing, instead of loading less.
    pub mandatory: bool,
    pub meta: ManifestMeta,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestMeta {
    pub content_length: u64,
}

impl Manifest {
    pub fn for_files(files: &[FilePointer]) -> Self {
        Self {
            entries: files
                .iter()
                .map(|f| ManifestEntry {
                    url: format!("s3://{}/{}", f.bucket, f.key),
                    mandatory: true,
                    meta: ManifestMeta {
                        content_length: f.bytes,
                    },
                })
                .collect(),
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("strings and integers always serialize")
    }
}

/// `manifests/<first>-<last>.manifest`, named after the `files` stream records it covers.
pub fn manifest_key(first_sequence: &str, last_sequence: &str) -> String {
    format!("manifests/{first_sequence}-{last_sequence}.manifest")
}

/// Where the JSONPaths file of the COPY lives.
pub const JSONPATHS_KEY: &str = "manifests/jsonpaths.json";

/// The lake as a writer of the COPY's files: encrypted by the bucket's default.
fn lake(s3: &aws_sdk_s3::Client, bucket: &str) -> Lake {
    Lake {
        s3: s3.clone(),
        bucket: bucket.to_string(),
        sse_kms_key_id: None,
    }
}

/// A failed write of one of the COPY's files. Not a batch file's error: the object is
/// this crate's own, so its kind is the call's (a throttled or denied PutObject).
fn put_error(bucket: &str, key: &str, error: AwsError) -> WarehouseError {
    WarehouseError::Aws {
        context: format!("s3://{bucket}/{key}"),
        error,
    }
}

/// Writes a manifest (the same bytes on a retry).
pub async fn write(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    manifest: &Manifest,
) -> Result<(), WarehouseError> {
    lake(s3, bucket)
        .put_json(key, manifest.to_json().into())
        .await
        .map_err(|e| put_error(bucket, key, e))
}

/// Writes the JSONPaths file Redshift's COPY reads.
pub async fn write_jsonpaths(s3: &aws_sdk_s3::Client, bucket: &str) -> Result<(), WarehouseError> {
    lake(s3, bucket)
        .put_json(JSONPATHS_KEY, crate::schema::jsonpaths().into_bytes().into())
        .await
        .map_err(|e| put_error(bucket, JSONPATHS_KEY, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_redshift_format() {
        let pointer = FilePointer {
            bucket: "lake".into(),
            key: "events/2026/01/01/00/1-2.gzip".into(),
            records: 2,
            bytes: 321,
            shard: "shardId-0".into(),
            first_sequence: "1".into(),
            last_sequence: "2".into(),
            min_event_timestamp: 0,
            max_event_timestamp: 0,
        };
        let json = String::from_utf8(Manifest::for_files(&[pointer]).to_json()).expect("utf8");
        assert_eq!(
            json,
            r#"{"entries":[{"url":"s3://lake/events/2026/01/01/00/1-2.gzip","mandatory":true,"meta":{"content_length":321}}]}"#
        );
        assert_eq!(manifest_key("10", "20"), "manifests/10-20.manifest");
    }
}
