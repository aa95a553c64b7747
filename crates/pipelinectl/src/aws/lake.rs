//! S3 calls on the data lake's bucket: `summary` counts and reads what the prefixes
//! hold, `dead-letters` reads and deletes the dead letters, `backfill` lists the batch
//! files of an hour, `forget` reads them and the versions they replaced, and deletes those
//! (writes go through the runtime's `Lake`).

use bytes::Bytes;
use pipeline_runtime::s3::GetError;
use pipeline_runtime::{AwsError, ErrorKind};

/// Through [`list`], the runtime's.
const LIST: &str = "s3:ListBucket";
const GET: &str = "s3:GetObject";
const DELETE: &str = "s3:DeleteObject";
const LIST_VERSIONS: &str = "s3:ListBucketVersions";
const GET_VERSION: &str = "s3:GetObjectVersion";
const DELETE_VERSION: &str = "s3:DeleteObjectVersion";

/// The IAM actions the functions of this module need.
pub const IAM_ACTIONS: &[&str] = &[LIST, GET, DELETE, LIST_VERSIONS, GET_VERSION, DELETE_VERSION];

pub use pipeline_runtime::s3::{Listed, list};

/// GetObject of `key`, its body read to the end; a body that breaks off after the
/// call succeeded is a transient failure of this call too. Meant for small objects (a
/// dead letter, one `errors/` batch file): the whole body is held in memory.
pub async fn get(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Result<Bytes, AwsError> {
    pipeline_runtime::s3::get_whole(s3, bucket, key)
        .await
        .map_err(|e| match e {
            GetError::Object(error) => error,
            GetError::BrokeOff(e) => AwsError::new(
                GET,
                ErrorKind::Transient,
                format!("s3://{bucket}/{key}: the body broke off: {e}"),
            ),
        })
}

/// DeleteObject of `key`. Deleting a key that is not there succeeds, so a delete
/// repeated after a crash is harmless.
pub async fn delete(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Result<(), AwsError> {
    s3.delete_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk(DELETE, e))?;
    Ok(())
}

/// A version of an object that is no longer its current one (a versioned bucket).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OldVersion {
    pub key: String,
    pub version_id: String,
}

/// ListObjectVersions under `prefix`: every version that is not its key's current one
/// (none in a bucket that never had versioning), page by page.
pub async fn old_versions(s3: &aws_sdk_s3::Client, bucket: &str, prefix: &str) -> Result<Vec<OldVersion>, AwsError> {
    let mut old = Vec::new();
    let (mut key_marker, mut version_marker): (Option<String>, Option<String>) = (None, None);
    loop {
        let page = s3
            .list_object_versions()
            .bucket(bucket)
            .prefix(prefix)
            .set_key_marker(key_marker.take())
            .set_version_id_marker(version_marker.take())
            .send()
            .await
            .map_err(|e| AwsError::from_sdk(LIST_VERSIONS, e))?;
        // A version from before versioning was turned on is named "null"; it is
        // deleted by that name like any other.
        old.extend(
            page.versions()
                .iter()
                .filter(|v| v.is_latest() != Some(true))
                .filter_map(|v| {
                    Some(OldVersion {
                        key: v.key()?.to_string(),
                        version_id: v.version_id()?.to_string(),
                    })
                }),
        );
        key_marker = page.next_key_marker().map(str::to_string);
        version_marker = page.next_version_id_marker().map(str::to_string);
        if page.is_truncated() != Some(true) || key_marker.is_none() {
            return Ok(old);
        }
    }
}

/// GetObject of the current `key`: its body read to the end, and its ETag (to write it
/// again only if no one else did in between).
pub async fn get_current(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> Result<(Bytes, Option<String>), AwsError> {
    let object = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk(GET, e))?;
    let etag = object.e_tag().map(str::to_string);
    let body = whole_body(object.body, GET, format!("s3://{bucket}/{key}")).await?;
    Ok((body, etag))
}

/// GetObject of one version of `key`, its body read to the end.
pub async fn get_version(s3: &aws_sdk_s3::Client, bucket: &str, key: &str, version: &str) -> Result<Bytes, AwsError> {
    let object = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .version_id(version)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk(GET_VERSION, e))?;
    whole_body(
        object.body,
        GET_VERSION,
        format!("s3://{bucket}/{key}?versionId={version}"),
    )
    .await
}

/// A GetObject answer's body read to the end: S3 streams it after the headers, so it
/// can break off after the call succeeded (and a retry may well read it whole).
async fn whole_body(
    body: aws_sdk_s3::primitives::ByteStream,
    action: &'static str,
    location: String,
) -> Result<Bytes, AwsError> {
    let body = body.collect().await.map_err(|e| {
        AwsError::new(
            action,
            ErrorKind::Transient,
            format!("{location}: the body broke off: {e}"),
        )
    })?;
    Ok(body.into_bytes())
}

/// DeleteObjectVersion: removes one version of `key` for good.
pub async fn delete_version(s3: &aws_sdk_s3::Client, bucket: &str, key: &str, version: &str) -> Result<(), AwsError> {
    s3.delete_object()
        .bucket(bucket)
        .key(key)
        .version_id(version)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk(DELETE_VERSION, e))?;
    Ok(())
}
