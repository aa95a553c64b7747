//! One shard's batch under construction: valid events and rejects, each in its own
//! gzipped JSON-lines file, and what the flush policy and the pointer need. Pure.
//! [`ShardBatches`] is the buffer of the shard's processor: one open batch at a time,
//! sealed when a flush takes it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use event_model::{BatchFile, BatchKind, Event, FilePointer, RejectedRecord, Rules, batch_key};
use shard_consumer::RecordPosition;
use shard_consumer::buffered::Buffer;
use shard_consumer::kinesis::KinesisRecord;
use tokio::time::Instant;

/// When a batch is flushed: whichever limit is reached first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushLimits {
    /// Uncompressed JSON-lines bytes (events and rejects together).
    pub max_bytes: u64,
    pub max_records: u64,
    /// Time since the batch's first record was buffered.
    pub max_age: Duration,
}

/// What happened to the records of a batch, for metrics.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    pub records_in: u64,
    pub bytes_in: u64,
    pub valid: u64,
    /// Valid events with top-level fields outside the schema (kept in the lake only).
    pub with_unknown_fields: u64,
    pub rejected: BTreeMap<&'static str, u64>,
    pub normalized: BTreeMap<&'static str, u64>,
}

/// An object to write.
#[derive(Debug, Clone)]
pub struct Object {
    pub key: String,
    pub body: Bytes,
    pub lines: u64,
}

/// A finished batch: the objects to write, the pointer to publish, the checkpoint to take.
#[derive(Debug)]
pub struct SealedBatch {
    pub events: Option<Object>,
    pub errors: Option<Object>,
    /// Published after the events object is written (absent when every record was rejected).
    pub pointer: Option<FilePointer>,
    /// Checkpoint here once everything above is durable.
    pub last: RecordPosition,
    pub tally: Tally,
    pub age: Duration,
}

/// A shard's open batch.
pub struct ShardBatch {
    shard: String,
    gzip_level: u32,
    events: BatchFile,
    errors: BatchFile,
    first: Option<(RecordPosition, i64)>,
    last: Option<RecordPosition>,
    started: Option<Instant>,
    event_time: Option<(i64, i64)>,
    tally: Tally,
}

impl ShardBatch {
    pub fn new(shard: &str, gzip_level: u32) -> Self {
        Self {
            shard: shard.to_string(),
            gzip_level,
            events: BatchFile::new(gzip_level),
            errors: BatchFile::new(gzip_level),
            first: None,
            last: None,
            started: None,
            event_time: None,
            tally: Tally::default(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.last.is_none()
    }

    pub fn records(&self) -> u64 {
        self.tally.records_in
    }

    pub fn uncompressed_bytes(&self) -> u64 {
        self.events.uncompressed_bytes() + self.errors.uncompressed_bytes()
    }

    /// Adds records, each as a valid event (with `server_timestamp` = its arrival) or a reject.
    pub fn add_all(&mut self, records: &[KinesisRecord], rules: &Rules, now: Instant) {
        let (Some(first), Some(last)) = (records.first(), records.last()) else {
            return;
        };
        if self.first.is_none() {
            self.first = Some((first.position.clone(), first.arrival_ms));
            self.started = Some(now);
        }
        for record in records {
            self.add(record, rules);
        }
        // Once per batch: a position holds a 56-digit sequence number string.
        self.last = Some(last.position.clone());
    }

    fn add(&mut self, record: &KinesisRecord, rules: &Rules) {
        self.tally.records_in += 1;
        self.tally.bytes_in += record.data.len() as u64;
        if let Some(invalid) = &record.invalid {
            self.reject(record, invalid.reason(), None, &invalid.to_string());
            return;
        }
        match Event::parse(&record.data, record.arrival_ms, rules) {
            Ok(event) => {
                event.write_json_line(Some(record.arrival_ms), self.events.buffer());
                self.events.line_written();
                self.tally.valid += 1;
                self.tally.with_unknown_fields += u64::from(event.has_unknown_fields());
                for normalization in event.normalizations.iter() {
                    *self.tally.normalized.entry(normalization.as_str()).or_default() += 1;
                }
                let ts = event.event_timestamp;
                self.event_time = Some(match self.event_time {
                    None => (ts, ts),
                    Some((min, max)) => (min.min(ts), max.max(ts)),
                });
            }
            Err(rejection) => self.reject(
                record,
                rejection.reason.as_str(),
                rejection.field.as_deref(),
                &rejection.detail,
            ),
        }
    }

    fn reject(&mut self, record: &KinesisRecord, reason: &'static str, field: Option<&str>, detail: &str) {
        *self.tally.rejected.entry(reason).or_default() += 1;
        RejectedRecord {
            reason: reason.to_string(),
            field: field.map(str::to_string),
            detail: detail.to_string(),
            shard: self.shard.clone(),
            sequence: record.position.sequence.to_string(),
            subsequence: record.position.subsequence,
            arrival: record.arrival_ms,
            raw_base64: RejectedRecord::encode_raw(&record.data),
        }
        .write_json_line(self.errors.buffer());
        self.errors.line_written();
    }

    /// Whether a limit is reached.
    pub fn is_due(&self, limits: &FlushLimits, now: Instant) -> bool {
        let Some(started) = self.started else {
            return false;
        };
        self.uncompressed_bytes() >= limits.max_bytes
            || self.records() >= limits.max_records
            || now.duration_since(started) >= limits.max_age
    }

    /// Closes the batch; `None` when it is empty. Keys are a pure function of the
    /// records, so writing the sealed batch again writes the same objects.
    pub fn seal(self, bucket: &str, now: Instant) -> Option<SealedBatch> {
        let ((first, first_arrival), last) = (self.first?, self.last?);
        let (first_sequence, last_sequence) = (first.sequence.to_string(), last.sequence.to_string());
        let object = |kind: BatchKind, file: BatchFile| {
            (!file.is_empty()).then(|| Object {
                key: batch_key(kind, first_arrival, &first_sequence, &last_sequence),
                lines: file.lines(),
                body: Bytes::from(file.finish()),
            })
        };
        let events = object(BatchKind::Events, self.events);
        let errors = object(BatchKind::Errors, self.errors);
        let pointer = events.as_ref().map(|events| {
            let (min, max) = self.event_time.unwrap_or_default();
            FilePointer {
                bucket: bucket.to_string(),
                key: events.key.clone(),
                records: events.lines,
                bytes: events.body.len() as u64,
                shard: self.shard.clone(),
                first_sequence: first_sequence.clone(),
                last_sequence: last_sequence.clone(),
                min_event_timestamp: min,
                max_event_timestamp: max,
            }
        });
        Some(SealedBatch {
            events,
            errors,
            pointer,
            last,
            tally: self.tally,
            age: self.started.map(|s| now.duration_since(s)).unwrap_or_default(),
        })
    }

    /// A fresh batch for the same shard.
    pub fn renewed(&self) -> Self {
        Self::new(&self.shard, self.gzip_level)
    }
}

/// What every shard's batches follow.
#[derive(Debug, Clone)]
pub struct Batching {
    pub rules: Rules,
    pub limits: FlushLimits,
    pub gzip_level: u32,
    /// The lake's bucket, which the pointers name.
    pub bucket: String,
}

/// A shard's batches: the open one, sealed when a flush takes it.
pub struct ShardBatches {
    open: ShardBatch,
    batching: Arc<Batching>,
}

impl ShardBatches {
    pub fn new(shard: &str, batching: Arc<Batching>) -> Self {
        Self {
            open: ShardBatch::new(shard, batching.gzip_level),
            batching,
        }
    }
}

impl Buffer<KinesisRecord> for ShardBatches {
    type Taken = SealedBatch;
    type Added = ();

    fn add(&mut self, records: &[KinesisRecord], now: Instant) {
        self.open.add_all(records, &self.batching.rules, now);
    }

    fn is_due(&self, now: Instant) -> bool {
        self.open.is_due(&self.batching.limits, now)
    }

    fn take(&mut self, now: Instant) -> Option<SealedBatch> {
        let fresh = self.open.renewed();
        std::mem::replace(&mut self.open, fresh).seal(&self.batching.bucket, now)
    }

    fn written(&mut self, sealed: &mut SealedBatch) -> Option<RecordPosition> {
        Some(sealed.last.clone())
    }

    fn clear(&mut self) {
        self.open = self.open.renewed();
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use shard_consumer::SequenceNumber;
    use shard_consumer::kinesis::decode_record;

    use super::*;

    const ARRIVAL: i64 = 1_767_225_600_000;

    fn record(sequence: &str, data: &[u8]) -> KinesisRecord {
        let mut out = Vec::new();
        decode_record(
            SequenceNumber::parse(sequence).expect("sequence"),
            "pk",
            Bytes::copy_from_slice(data),
            ARRIVAL,
            &mut out,
        );
        out.remove(0)
    }

    fn event(id: u32, ts: i64) -> Vec<u8> {
        format!(
            r#"{{"event_id":"00000000-0000-4000-8000-{id:012}","client_id":"00000000-0000-4000-8000-000000000001","app_name":"g","event_version":"1","event_type":"t","event_timestamp":{ts}}}"#
        )
        .into_bytes()
    }

    fn gunzip(body: &[u8]) -> Vec<String> {
        let mut text = String::new();
        flate2::read::GzDecoder::new(body)
            .read_to_string(&mut text)
            .expect("gunzip");
        text.lines().map(str::to_string).collect()
    }

    #[test]
    fn a_batch_splits_events_from_rejects_and_points_at_the_events() {
        let now = Instant::now();
        let empty = ShardBatch::new("shardId-000000000001", 6);
        assert!(empty.seal("b", now).is_none(), "nothing to seal");
        let mut batch = ShardBatch::new("shardId-000000000001", 6);
        let rules = Rules::default();
        batch.add_all(std::slice::from_ref(&record("100", &event(1, 50))), &rules, now);
        batch.add_all(std::slice::from_ref(&record("101", b"{not json")), &rules, now);
        batch.add_all(std::slice::from_ref(&record("102", &event(2, 20))), &rules, now);
        let sealed = batch.seal("lake", now).expect("sealed");
        let events = sealed.events.expect("events");
        assert_eq!(events.key, "events/2026/01/01/00/100-102.gzip");
        let lines = gunzip(&events.body);
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with(&format!("{{\"server_timestamp\":{ARRIVAL},")));
        let errors = sealed.errors.expect("errors");
        assert_eq!(errors.key, "errors/2026/01/01/00/100-102.gzip");
        let rejected: RejectedRecord = serde_json::from_str(&gunzip(&errors.body)[0]).expect("reject line");
        assert_eq!(rejected.reason, "malformed_json");
        assert_eq!(rejected.sequence, "101");
        assert_eq!(rejected.raw().expect("base64"), b"{not json");
        let pointer = sealed.pointer.expect("pointer");
        assert_eq!(
            (
                pointer.records,
                pointer.bytes,
                pointer.min_event_timestamp,
                pointer.max_event_timestamp
            ),
            (2, events.body.len() as u64, 20, 50)
        );
        assert_eq!(
            (pointer.first_sequence.as_str(), pointer.last_sequence.as_str()),
            ("100", "102")
        );
        assert_eq!(sealed.last.sequence.to_string(), "102");
        assert_eq!(sealed.tally.rejected.get("malformed_json"), Some(&1));
    }

    #[test]
    fn only_rejects_means_no_pointer() {
        let now = Instant::now();
        let mut batch = ShardBatch::new("s", 1);
        batch.add_all(std::slice::from_ref(&record("7", b"")), &Rules::default(), now);
        let sealed = batch.seal("lake", now).expect("sealed");
        assert!(sealed.events.is_none() && sealed.pointer.is_none());
        assert!(sealed.errors.is_some());
    }

    #[test]
    fn a_flush_takes_the_open_batch_and_checkpoints_its_last_record() {
        let now = Instant::now();
        let batching = Arc::new(Batching {
            rules: Rules::default(),
            limits: FlushLimits {
                max_bytes: 1_000_000,
                max_records: 2,
                max_age: Duration::from_secs(60),
            },
            gzip_level: 1,
            bucket: "lake".into(),
        });
        let mut batches = ShardBatches::new("s", batching);
        assert!(batches.take(now).is_none(), "nothing to take");
        batches.add(&[record("1", &event(1, 1))], now);
        assert!(!batches.is_due(now));
        batches.add(&[record("2", &event(2, 1))], now);
        assert!(batches.is_due(now), "two records");
        let mut sealed = batches.take(now).expect("sealed");
        assert_eq!(sealed.pointer.as_ref().map(|p| p.bucket.as_str()), Some("lake"));
        assert_eq!(
            batches.written(&mut sealed).map(|p| p.sequence.to_string()),
            Some("2".into())
        );
        assert!(!batches.is_due(now + Duration::from_secs(600)), "a fresh batch");
    }

    #[test]
    fn limits() {
        let now = Instant::now();
        let limits = FlushLimits {
            max_bytes: 1_000,
            max_records: 3,
            max_age: Duration::from_secs(5),
        };
        let mut batch = ShardBatch::new("s", 1);
        assert!(
            !batch.is_due(&limits, now + Duration::from_secs(60)),
            "an empty batch is never due"
        );
        batch.add_all(std::slice::from_ref(&record("1", &event(1, 1))), &Rules::default(), now);
        assert!(!batch.is_due(&limits, now + Duration::from_secs(4)));
        assert!(batch.is_due(&limits, now + Duration::from_secs(5)), "age");
        batch.add_all(std::slice::from_ref(&record("2", &event(2, 1))), &Rules::default(), now);
        batch.add_all(std::slice::from_ref(&record("3", &event(3, 1))), &Rules::default(), now);
        assert!(batch.is_due(&limits, now), "count");
        let mut batch = ShardBatch::new("s", 1);
        batch.add_all(&[record("1", &[b'x'; 1_000])], &Rules::default(), now);
        assert!(batch.is_due(&limits, now), "bytes");
    }
}
