//! Every call of the redshift-connector's output, one function each: COPY manifests and
//! dead letters to the lake, a HeadObject for a file a load failed on, and the
//! warehouse's schema check and load transaction. The warehouse's statements are built
//! by the `warehouse` crate (the Redshift Data API or PostgreSQL); this module only
//! calls it. (The consumer's own calls, reading the `files` stream and the lease
//! tables, are in `shard-consumer`.)

use bytes::Bytes;
use futures::StreamExt;
use pipeline_runtime::AwsClients;
use pipeline_runtime::error::AwsError;
use pipeline_runtime::s3::Lake;
use warehouse::{Dialect, LoadBatch, LoadReport, Warehouse, WarehouseError};

/// The IAM actions the functions of this module need: S3 for the manifests, the dead
/// letters and HeadObject (authorized as `s3:GetObject`), the Data API for the
/// warehouse on Redshift.
pub const IAM_ACTIONS: &[&str] = &[
    "s3:PutObject",
    "s3:GetObject",
    "redshift-data:ExecuteStatement",
    "redshift-data:BatchExecuteStatement",
    "redshift-data:DescribeStatement",
    "redshift-data:GetStatementResult",
    "redshift-data:CancelStatement",
];

/// HeadObject requests in flight at once when a failed load is searched for a missing file.
const HEADS_IN_FLIGHT: usize = 8;

/// The lake's bucket and the warehouse.
pub struct Sink {
    lake: Lake,
    warehouse: Warehouse,
}

impl Sink {
    pub fn new(aws: &AwsClients, bucket: &str, sse_kms_key_id: Option<&str>, warehouse: Warehouse) -> Self {
        let lake = Lake {
            s3: aws.s3(),
            bucket: bucket.to_string(),
            sse_kms_key_id: sse_kms_key_id.map(str::to_string),
        };
        Self { lake, warehouse }
    }

    /// The lake's bucket: the batch files, the manifests and the dead letters are in it.
    pub fn bucket(&self) -> &str {
        &self.lake.bucket
    }

    pub fn dialect(&self) -> Dialect {
        self.warehouse.dialect()
    }

    /// Reads the warehouse's schema version, changing nothing (only `pipelinectl setup`
    /// migrates); an error when it is not this build's.
    pub async fn check_schema(&self) -> Result<u32, WarehouseError> {
        self.warehouse.check_schema().await
    }

    /// S3 PutObject of a load's COPY manifest (JSON; at most `LOAD_MAX_FILES` entries,
    /// checked against the warehouse's limit at start). The same key and bytes on a retry.
    pub async fn put_manifest(&self, key: &str, body: Bytes) -> Result<(), AwsError> {
        self.lake.put_json(key, body).await
    }

    /// S3 PutObject of one dead letter (JSON) under `dead-letters/`.
    pub async fn put_dead_letter(&self, key: &str, body: Bytes) -> Result<(), AwsError> {
        self.lake.put_json(key, body).await
    }

    /// The load transaction of `batch` in the warehouse (manifest COPY into staging,
    /// dedupe, insert, record the files), exactly once per file. On Redshift, each
    /// statement is one Data API call within its 100 KB text limit.
    pub async fn load(&self, batch: &LoadBatch) -> Result<LoadReport, WarehouseError> {
        self.warehouse.load(batch).await
    }

    /// The file of `batch` that is missing from the bucket, if one is: S3 HeadObject of
    /// each file, at most `HEADS_IN_FLIGHT` at a time, until one is not found. Any
    /// other answer (found, or an error) counts as present.
    pub async fn missing_file(&self, batch: &LoadBatch) -> Option<String> {
        // Owned values in the futures: borrowed ones make this future not `Send`.
        let files: Vec<(String, String)> = batch.files.iter().map(|f| (f.bucket.clone(), f.key.clone())).collect();
        let s3 = self.lake.s3.clone();
        let mut heads = futures::stream::iter(files)
            .map(|(bucket, key)| {
                let s3 = s3.clone();
                async move {
                    let head = s3.head_object().bucket(&bucket).key(&key).send().await;
                    let missing =
                        head.as_ref().err().and_then(|e| e.as_service_error()).is_some_and(|e| {
                            matches!(e, aws_sdk_s3::operation::head_object::HeadObjectError::NotFound(_))
                        });
                    missing.then_some(key)
                }
            })
            .buffer_unordered(HEADS_IN_FLIGHT);
        while let Some(found) = heads.next().await {
            if found.is_some() {
                return found;
            }
        }
        None
    }
}
