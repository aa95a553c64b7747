//! Redshift's COPY manifest for a load, and where it is kept.

use event_model::FilePointer;
use serde::{Deserialize, Serialize};

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

fn put_error(bucket: &str, key: &str, error: impl std::fmt::Display) -> crate::WarehouseError {
    crate::WarehouseError::File {
        bucket: bucket.to_string(),
        key: key.to_string(),
        reason: format!("cannot write: {error}"),
    }
}

/// Writes a manifest (the same bytes on a retry).
pub async fn write(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    manifest: &Manifest,
) -> Result<(), crate::WarehouseError> {
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .content_type("application/json")
        .body(manifest.to_json().into())
        .send()
        .await
        .map_err(|e| put_error(bucket, key, aws_smithy_types::error::display::DisplayErrorContext(&e)))?;
    Ok(())
}

/// Writes the JSONPaths file Redshift's COPY reads.
pub async fn write_jsonpaths(s3: &aws_sdk_s3::Client, bucket: &str) -> Result<(), crate::WarehouseError> {
    s3.put_object()
        .bucket(bucket)
        .key(JSONPATHS_KEY)
        .content_type("application/json")
        .body(crate::schema::jsonpaths().into_bytes().into())
        .send()
        .await
        .map_err(|e| {
            put_error(
                bucket,
                JSONPATHS_KEY,
                aws_smithy_types::error::display::DisplayErrorContext(&e),
            )
        })?;
    Ok(())
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
