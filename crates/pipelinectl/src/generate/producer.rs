//! PutRecords in batches within the API's limits, retrying only the entries a partial
//! failure names.

use std::time::Duration;

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use bytes::Bytes;
use shard_consumer::backoff::Backoff;

/// PutRecords takes at most 500 records and 5 MiB (data and partition keys) per call.
pub const MAX_RECORDS: usize = 500;
pub const MAX_BYTES: usize = 5 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct Record {
    pub partition_key: String,
    pub data: Bytes,
}

impl Record {
    fn size(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }
}

/// What one flush did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub records: u64,
    pub retried: u64,
}

/// Where generated records go: the stream, or a file of lines (a sample to replay).
pub enum Sink {
    Stream(Producer),
    File(std::io::BufWriter<std::fs::File>),
}

impl Sink {
    pub async fn push(&mut self, record: Record) -> anyhow::Result<Sent> {
        match self {
            Sink::Stream(producer) => producer.push(record).await,
            Sink::File(file) => {
                use std::io::Write;
                file.write_all(&record.data)?;
                file.write_all(b"\n")?;
                Ok(Sent { records: 1, retried: 0 })
            }
        }
    }

    pub async fn flush(&mut self) -> anyhow::Result<Sent> {
        match self {
            Sink::Stream(producer) => producer.flush().await,
            Sink::File(file) => {
                use std::io::Write;
                file.flush()?;
                Ok(Sent::default())
            }
        }
    }
}

pub struct Producer {
    kinesis: aws_sdk_kinesis::Client,
    stream: String,
    pending: Vec<Record>,
    bytes: usize,
}

impl Producer {
    pub fn new(kinesis: aws_sdk_kinesis::Client, stream: &str) -> Self {
        Self {
            kinesis,
            stream: stream.to_string(),
            pending: Vec::new(),
            bytes: 0,
        }
    }

    /// Queues a record, sending a full batch first when it would not fit.
    pub async fn push(&mut self, record: Record) -> anyhow::Result<Sent> {
        let mut sent = Sent::default();
        if self.pending.len() == MAX_RECORDS || self.bytes + record.size() > MAX_BYTES {
            sent = self.flush().await?;
        }
        self.bytes += record.size();
        self.pending.push(record);
        Ok(sent)
    }

    /// Sends what is queued; failed entries are sent again until they all succeed.
    pub async fn flush(&mut self) -> anyhow::Result<Sent> {
        let mut records = std::mem::take(&mut self.pending);
        self.bytes = 0;
        let mut sent = Sent::default();
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut attempts = 0;
        while !records.is_empty() {
            let entries = records
                .iter()
                .map(|r| {
                    PutRecordsRequestEntry::builder()
                        .partition_key(&r.partition_key)
                        .data(Blob::new(r.data.to_vec()))
                        .build()
                })
                .collect::<Result<Vec<_>, _>>()?;
            let output = self
                .kinesis
                .put_records()
                .stream_name(&self.stream)
                .set_records(Some(entries))
                .send()
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "PutRecords on {}: {}",
                        self.stream,
                        aws_smithy_types::error::display::DisplayErrorContext(&e)
                    )
                })?;
            let failed: Vec<Record> = output
                .records()
                .iter()
                .zip(records)
                .filter(|(result, _)| result.error_code().is_some())
                .map(|(_, record)| record)
                .collect();
            sent.records += output.records().len() as u64 - failed.len() as u64;
            sent.retried += failed.len() as u64;
            records = failed;
            if !records.is_empty() {
                attempts += 1;
                anyhow::ensure!(
                    attempts < 20,
                    "{} records still failing after 20 attempts",
                    records.len()
                );
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
        Ok(sent)
    }
}
