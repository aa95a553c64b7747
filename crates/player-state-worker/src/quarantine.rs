//! Records this worker can never apply go to `errors/` like every other reject: with
//! their reason and raw bytes, counted in `RejectedRecords{Reason}`, and durable before
//! the shard's checkpoint moves past them. Then the shard moves on.

use std::collections::BTreeMap;

use bytes::Bytes;
use event_model::{BatchFile, RejectedRecord, quarantine_key};
use pipeline_runtime::metrics::names::{self, dimension::REASON};
use pipeline_runtime::retry::{RetryError, RetryPolicy, retry};
use pipeline_runtime::s3::Lake;
use pipeline_runtime::{AwsError, Metrics};
use tokio_util::sync::CancellationToken;

use crate::sink;

/// Where one stage's rejects go.
#[derive(Debug, Clone)]
pub struct Quarantine {
    pub lake: Lake,
    /// Names the stage in the object key (`errors/…/<first>-<last>.<application>.gzip`).
    pub application: &'static str,
    pub metrics: Metrics,
}

impl Quarantine {
    /// Writes `rejected` (in stream order) as one file and counts them; retried like
    /// any output the shard cannot skip, until `stop` (the lease is lost).
    pub async fn store(
        &self,
        rejected: &[RejectedRecord],
        stop: &CancellationToken,
    ) -> Result<(), RetryError<AwsError>> {
        let (Some(first), Some(last)) = (rejected.first(), rejected.last()) else {
            return Ok(());
        };
        let mut file = BatchFile::new(6);
        for record in rejected {
            record.write_json_line(file.buffer());
            file.line_written();
        }
        let body = Bytes::from(file.finish());
        let key = quarantine_key(self.application, first.arrival, &first.sequence, &last.sequence);
        retry(&RetryPolicy::SHARD_OUTPUT, stop, || {
            sink::quarantine::put_file(&self.lake, &key, body.clone())
        })
        .await?;
        let mut by_reason: BTreeMap<&str, u64> = BTreeMap::new();
        for record in rejected {
            *by_reason.entry(record.reason.as_str()).or_default() += 1;
        }
        for (reason, count) in &by_reason {
            self.metrics.count(names::REJECTED_RECORDS, *count, &[(REASON, reason)]);
        }
        self.metrics.count(names::REJECTED_RECORDS, rejected.len() as u64, &[]);
        tracing::warn!(%key, records = rejected.len(), reasons = ?by_reason, "records quarantined");
        Ok(())
    }
}
