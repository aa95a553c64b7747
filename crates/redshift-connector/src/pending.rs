//! One `files` shard's loads: the pointers gathered since the last load, when the next
//! load is due, the files a load could not take (held back and retried alone until
//! they load or go to the dead letters), and how far the shard may be checkpointed.
//! Pure. [`PendingLoad`] is the buffer of the shard's processor; a flush takes a
//! [`Load`] out of it (the gathered files and the held ones), which the loader settles
//! with the warehouse's answers and hands back.
//!
//! A held file never holds the other files back: they load as usual, and the warehouse's
//! `loaded_files` keeps them exactly once if the shard is read again. Only the
//! checkpoint waits until no file is held.
//!
//! A file is given up (dead-lettered) only when its window has passed and the fault is
//! surely the file's: the warehouse named it, or other loads succeeded while it kept
//! failing. During an outage of the warehouse every load fails: then nothing is given
//! up, everything waits.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use event_model::FilePointer;
use shard_consumer::RecordPosition;
use shard_consumer::buffered::Buffer;
use shard_consumer::kinesis::KinesisRecord;
use tokio::time::Instant;
use warehouse::LoadBatch;
use warehouse::manifest::manifest_key;

/// When pointers are loaded: whichever limit is reached first.
#[derive(Debug, Clone, Copy)]
pub struct LoadLimits {
    pub max_files: usize,
    /// Compressed bytes of the files.
    pub max_bytes: u64,
    pub max_age: Duration,
}

/// What every shard's loads follow.
#[derive(Debug, Clone)]
pub struct Loading {
    /// The lake's bucket: a pointer to another is refused.
    pub bucket: String,
    pub limits: LoadLimits,
}

/// A pointer and the `files` record it came in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub pointer: FilePointer,
    pub position: RecordPosition,
}

/// A file a load could not take, as the warehouse said (missing, not gzip, a line refused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub file: Pending,
    pub since: Instant,
    pub attempts: u32,
    pub next_try: Instant,
    /// The last refusal: its kind, message and line.
    pub kind: String,
    pub error: String,
    pub line: Option<u64>,
    /// The warehouse named this file as the cause (else it failed alone, unexplained).
    pub attributed: bool,
}

/// What a `files` record added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Added {
    Pointer,
    /// The same file is already pending (a producer's retried put).
    Duplicate,
    /// Already gathered (a retried call hands the same records again).
    Seen,
}

/// A `files` record that is not a pointer to the lake, and never will be: it goes to
/// the dead letters, with its bytes, before the checkpoint can pass it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotAPointer {
    pub position: RecordPosition,
    pub raw: Bytes,
    pub why: String,
}

/// What gathering records found, for the loader to act on at once.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Gathered {
    pub not_pointers: Vec<NotAPointer>,
    /// Records whose file is already pending (a producer's retried put).
    pub duplicates: Vec<RecordPosition>,
    /// Files gathered, not yet loaded.
    pub files: usize,
}

/// The loads of one shard.
#[derive(Debug)]
pub struct PendingLoad {
    loading: Arc<Loading>,
    files: Vec<Pending>,
    /// First and last `files` records gathered (pointers or not).
    first: Option<RecordPosition>,
    last: Option<RecordPosition>,
    started: Option<Instant>,
    held: Vec<Held>,
    /// The last record of the loads that committed: the checkpoint, once no file is held.
    committed_through: Option<RecordPosition>,
    /// When a load last committed: proof that the warehouse works.
    last_success: Option<Instant>,
}

impl PendingLoad {
    pub fn new(loading: Arc<Loading>) -> Self {
        Self {
            loading,
            files: Vec::new(),
            first: None,
            last: None,
            started: None,
            held: Vec::new(),
            committed_through: None,
            last_success: None,
        }
    }

    /// Whether `position` was already gathered or loaded.
    pub fn covers(&self, position: &RecordPosition) -> bool {
        self.last
            .as_ref()
            .or(self.committed_through.as_ref())
            .is_some_and(|last| position <= last)
    }

    /// The pointer a `files` record holds, if it is one to the lake.
    pub fn pointer(&self, data: &[u8]) -> Result<FilePointer, String> {
        match FilePointer::from_json(data) {
            Ok(pointer) if pointer.bucket == self.loading.bucket => Ok(pointer),
            Ok(pointer) => Err(format!(
                "the pointer names bucket {}; this connector loads only from {}",
                pointer.bucket, self.loading.bucket
            )),
            Err(error) => Err(error.to_string()),
        }
    }

    /// Notes a record of the stream, a pointer or not (`None`: it goes to the dead letters).
    pub fn note(&mut self, position: &RecordPosition, pointer: Option<FilePointer>, now: Instant) -> Added {
        if self.covers(position) {
            return Added::Seen;
        }
        if self.first.is_none() {
            self.first = Some(position.clone());
            self.started = Some(now);
        }
        self.last = Some(position.clone());
        let Some(pointer) = pointer else {
            return Added::Pointer;
        };
        // A producer's retried put can publish one pointer twice, even in one load;
        // the batch is built here for both back ends (and the Redshift manifest), so
        // here is where a file is kept once.
        let pending = self.files.iter().chain(self.held.iter().map(|h| &h.file));
        if pending.into_iter().any(|p| p.pointer.key == pointer.key) {
            return Added::Duplicate;
        }
        self.files.push(Pending {
            pointer,
            position: position.clone(),
        });
        Added::Pointer
    }

    /// Files gathered, not yet loaded.
    pub fn files(&self) -> usize {
        self.files.len()
    }

    pub fn held(&self) -> &[Held] {
        &self.held
    }

    /// Where to checkpoint: the last committed record, once no file is held.
    pub fn checkpoint(&self) -> Option<&RecordPosition> {
        if self.held.is_empty() && self.files.is_empty() {
            self.committed_through.as_ref()
        } else {
            None
        }
    }
}

impl Buffer<KinesisRecord> for PendingLoad {
    type Taken = Load;
    type Added = Gathered;

    fn add(&mut self, records: &[KinesisRecord], now: Instant) -> Gathered {
        let mut gathered = Gathered::default();
        for record in records {
            let pointer = match self.pointer(&record.data) {
                Ok(pointer) => Some(pointer),
                Err(why) => {
                    gathered.not_pointers.push(NotAPointer {
                        position: record.position.clone(),
                        raw: record.data.clone(),
                        why,
                    });
                    None
                }
            };
            if self.note(&record.position, pointer, now) == Added::Duplicate {
                gathered.duplicates.push(record.position.clone());
            }
        }
        gathered.files = self.files.len();
        gathered
    }

    /// The gathered records reached a limit, or a held file waits for its next try.
    fn is_due(&self, now: Instant) -> bool {
        let limits = &self.loading.limits;
        let bytes: u64 = self.files.iter().map(|p| p.pointer.bytes).sum();
        let gathered = self.started.is_some_and(|s| now.duration_since(s) >= limits.max_age)
            || self.files.len() >= limits.max_files
            || bytes >= limits.max_bytes;
        gathered || self.held.iter().any(|h| h.next_try <= now)
    }

    /// The gathered records, and the held files (those due are tried again).
    fn take(&mut self, now: Instant) -> Option<Load> {
        if self.last.is_none() && !self.held.iter().any(|h| h.next_try <= now) {
            return None;
        }
        self.started = None;
        Some(Load {
            files: std::mem::take(&mut self.files),
            first: self.first.take(),
            last: self.last.take(),
            held: std::mem::take(&mut self.held),
            last_success: self.last_success,
        })
    }

    /// The gathered files committed (those held aside excepted): the held files come
    /// back, and the checkpoint may move once none is left.
    fn written(&mut self, load: &mut Load) -> Option<RecordPosition> {
        if let Some(last) = load.last.take() {
            self.committed_through = Some(last);
        }
        self.held.append(&mut load.held);
        self.last_success = self.last_success.max(load.last_success);
        self.checkpoint().cloned()
    }

    /// The shard ends only once every held file loaded or went to the dead letters.
    fn waiting_until(&self) -> Option<Instant> {
        self.held.iter().map(|h| h.next_try).min()
    }

    /// The lease moved: the next owner reads again from the checkpoint.
    fn clear(&mut self) {
        *self = Self::new(self.loading.clone());
    }
}

/// A load taken out of a shard's [`PendingLoad`]: the files gathered since the last
/// load, and the files held back.
#[derive(Debug)]
pub struct Load {
    files: Vec<Pending>,
    first: Option<RecordPosition>,
    last: Option<RecordPosition>,
    held: Vec<Held>,
    /// When a load last committed: proof that the warehouse works.
    last_success: Option<Instant>,
}

impl Load {
    /// The batch of the gathered files; `None` when there is none.
    pub fn batch(&self, bucket: &str) -> Option<LoadBatch> {
        let (first, last) = (self.first.as_ref()?, self.last.as_ref()?);
        if self.files.is_empty() {
            return None;
        }
        Some(LoadBatch {
            bucket: bucket.to_string(),
            files: self.files.iter().map(|p| p.pointer.clone()).collect(),
            manifest_key: manifest_key(first.sequence.as_str(), last.sequence.as_str()),
            reload_loaded_before: None,
        })
    }

    /// A file loaded on its own.
    pub fn alone(file: &Pending, bucket: &str) -> LoadBatch {
        let sequence = file.position.sequence.as_str();
        LoadBatch {
            bucket: bucket.to_string(),
            files: vec![file.pointer.clone()],
            manifest_key: manifest_key(sequence, sequence),
            reload_loaded_before: None,
        }
    }

    pub fn held(&self) -> &[Held] {
        &self.held
    }

    /// Takes the gathered file `key` out of its load: it is retried alone from now on.
    /// `false` when no gathered file has that key.
    pub fn hold(&mut self, key: &str, refusal: Refusal, now: Instant, retry_in: Duration) -> bool {
        let Some(index) = self.files.iter().position(|p| p.pointer.key == key) else {
            return false;
        };
        let file = self.files.remove(index);
        self.held.push(Held {
            file,
            since: now,
            attempts: 1,
            next_try: now + retry_in,
            kind: refusal.kind,
            error: refusal.error,
            line: refusal.line,
            attributed: refusal.attributed,
        });
        true
    }

    /// The gathered file `key` loaded on its own (a load was split to find a bad file).
    pub fn loaded_alone(&mut self, key: &str, now: Instant) {
        self.files.retain(|p| p.pointer.key != key);
        self.succeeded(now);
    }

    /// A load committed.
    pub fn succeeded(&mut self, now: Instant) {
        self.last_success = Some(now);
    }

    /// The gathered files, for a split.
    pub fn gathered(&self) -> Vec<Pending> {
        self.files.clone()
    }

    /// Whether the held file `held` is to be given up: its window passed, and the fault
    /// is surely its own.
    fn gives_up(&self, held: &Held, window: Duration, now: Instant) -> bool {
        let others_loaded = self.last_success.is_some_and(|at| at > held.since);
        now.duration_since(held.since) >= window && (held.attributed || others_loaded)
    }

    /// The held files whose next try is due.
    pub fn held_due(&self, now: Instant) -> Vec<String> {
        self.held
            .iter()
            .filter(|h| h.next_try <= now)
            .map(|h| h.file.pointer.key.clone())
            .collect()
    }

    /// A held file was refused again; returns it, with whether `window` has passed.
    pub fn refused_again(
        &mut self,
        key: &str,
        refusal: Refusal,
        now: Instant,
        retry_in: Duration,
        window: Duration,
    ) -> Option<(Held, bool)> {
        let held = self.held.iter_mut().find(|h| h.file.pointer.key == key)?;
        held.attempts += 1;
        held.next_try = now + retry_in;
        held.kind = refusal.kind;
        held.error = refusal.error;
        held.line = refusal.line;
        held.attributed |= refusal.attributed;
        let held = held.clone();
        let given_up = self.gives_up(&held, window, now);
        Some((held, given_up))
    }

    /// A held file loaded, or went to the dead letters: it no longer holds the checkpoint.
    pub fn release(&mut self, key: &str) -> Option<Held> {
        let index = self.held.iter().position(|h| h.file.pointer.key == key)?;
        Some(self.held.remove(index))
    }
}

/// Why a file did not load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub kind: String,
    pub error: String,
    pub line: Option<u64>,
    /// The warehouse (or a missing object) named the file; else it failed alone.
    pub attributed: bool,
}

#[cfg(test)]
mod tests {
    use shard_consumer::SequenceNumber;
    use shard_consumer::kinesis::decode_record;

    use super::*;

    fn at(sequence: &str) -> RecordPosition {
        RecordPosition {
            sequence: SequenceNumber::parse(sequence).expect("digits"),
            subsequence: 0,
        }
    }

    fn pointer(key: &str, bytes: u64) -> FilePointer {
        FilePointer {
            bucket: "lake".into(),
            key: key.into(),
            records: 1,
            bytes,
            shard: "shardId-0".into(),
            first_sequence: "1".into(),
            last_sequence: "1".into(),
            min_event_timestamp: 0,
            max_event_timestamp: 0,
        }
    }

    fn refusal() -> Refusal {
        Refusal {
            kind: "permanent".into(),
            error: "not gzip".into(),
            line: None,
            attributed: true,
        }
    }

    fn pending(limits: LoadLimits) -> PendingLoad {
        PendingLoad::new(Arc::new(Loading {
            bucket: "lake".into(),
            limits,
        }))
    }

    const LOOSE: LoadLimits = LoadLimits {
        max_files: 100,
        max_bytes: 1 << 30,
        max_age: Duration::from_secs(3600),
    };

    #[test]
    fn pointers_are_kept_once_and_the_load_is_due_at_a_limit() {
        let now = Instant::now();
        let mut load = pending(LoadLimits {
            max_files: 3,
            max_bytes: 1_000,
            max_age: Duration::from_secs(5),
        });
        assert!(!load.is_due(now + Duration::from_secs(60)), "empty is never due");
        assert!(load.take(now).is_none(), "nothing to take");
        assert_eq!(load.note(&at("10"), Some(pointer("a", 10)), now), Added::Pointer);
        assert_eq!(load.note(&at("10"), Some(pointer("a", 10)), now), Added::Seen);
        assert_eq!(load.note(&at("11"), Some(pointer("a", 10)), now), Added::Duplicate);
        assert_eq!(load.note(&at("12"), None, now), Added::Pointer);
        assert_eq!(load.files(), 1);
        assert!(!load.is_due(now + Duration::from_secs(4)));
        assert!(load.is_due(now + Duration::from_secs(5)), "age");
        load.note(&at("13"), Some(pointer("b", 995)), now);
        assert!(load.is_due(now), "bytes");
        let mut taken = load.take(now).expect("a load");
        let batch = taken.batch("lake").expect("batch");
        assert_eq!(batch.manifest_key, "manifests/10-13.manifest");
        assert_eq!(batch.files.len(), 2);
        assert_eq!(load.written(&mut taken), Some(at("13")));
        assert_eq!(
            load.note(&at("13"), Some(pointer("c", 1)), now),
            Added::Seen,
            "loaded already"
        );
    }

    #[test]
    fn records_that_are_not_pointers_to_the_lake_are_set_apart() {
        let record = |sequence: &str, data: &[u8]| {
            let mut out = Vec::new();
            decode_record(
                SequenceNumber::parse(sequence).expect("digits"),
                "pk",
                Bytes::copy_from_slice(data),
                0,
                &mut out,
            );
            out.remove(0)
        };
        let elsewhere = FilePointer {
            bucket: "other".into(),
            ..pointer("x", 1)
        };
        let records = [
            record("1", &pointer("a", 1).to_json()),
            record("2", b"{not json"),
            record("3", &elsewhere.to_json()),
            record("4", &pointer("a", 1).to_json()),
        ];
        let mut load = pending(LOOSE);
        let gathered = load.add(&records, Instant::now());
        assert_eq!(
            gathered
                .not_pointers
                .iter()
                .map(|n| (n.position.clone(), n.raw.clone()))
                .collect::<Vec<_>>(),
            [(at("2"), records[1].data.clone()), (at("3"), records[2].data.clone())]
        );
        assert!(gathered.not_pointers[1].why.contains("bucket other"));
        assert_eq!((gathered.duplicates, gathered.files), (vec![at("4")], 1));
    }

    #[test]
    fn a_held_file_holds_only_the_checkpoint_until_it_loads_or_is_given_up() {
        let now = Instant::now();
        let window = Duration::from_secs(300);
        let retry_in = Duration::from_secs(10);
        let mut load = pending(LOOSE);
        load.note(&at("1"), Some(pointer("good", 1)), now);
        load.note(&at("2"), Some(pointer("bad", 1)), now);
        load.note(&at("3"), Some(pointer("later", 1)), now);
        let mut taken = load.take(now).expect("a load");
        assert!(taken.hold("bad", refusal(), now, retry_in));
        let rest = taken.batch("lake").expect("the rest");
        assert_eq!(
            rest.files.iter().map(|f| f.key.as_str()).collect::<Vec<_>>(),
            ["good", "later"],
            "the other files load at once"
        );
        assert_eq!(load.written(&mut taken), None, "the held file holds the checkpoint");
        assert_eq!(load.waiting_until(), Some(now + retry_in), "the shard cannot end yet");
        assert!(load.take(now).is_none(), "nothing gathered, the held file not due");
        assert!(load.is_due(now + retry_in));
        load.note(&at("4"), Some(pointer("bad", 1)), now);
        assert_eq!(load.files(), 0, "a held file's pointer sent again is a duplicate");
        let mut taken = load.take(now).expect("a load");
        assert!(taken.held_due(now).is_empty());
        assert_eq!(taken.held_due(now + retry_in), vec!["bad".to_string()]);
        let (held, given_up) = taken
            .refused_again("bad", refusal(), now + retry_in, retry_in, window)
            .expect("held");
        assert_eq!((held.attempts, given_up), (2, false));
        let (_, given_up) = taken
            .refused_again("bad", refusal(), now + window, retry_in, window)
            .expect("held");
        assert!(given_up);
        let held = taken.release("bad").expect("held");
        assert_eq!(held.file.position, at("2"));
        assert_eq!(
            load.written(&mut taken),
            Some(at("4")),
            "past the dead letter and the duplicate"
        );
        assert_eq!(load.waiting_until(), None);
        assert_eq!(Load::alone(&held.file, "lake").manifest_key, "manifests/2-2.manifest");
    }

    #[test]
    fn a_file_failing_unexplained_is_given_up_only_once_other_loads_succeed() {
        let now = Instant::now();
        let window = Duration::from_secs(60);
        let unexplained = Refusal {
            attributed: false,
            ..refusal()
        };
        let mut load = pending(LOOSE);
        load.note(&at("1"), Some(pointer("odd", 1)), now);
        let mut taken = load.take(now).expect("a load");
        assert!(taken.hold("odd", unexplained.clone(), now, window));
        // The warehouse is down: nothing loads, the file waits however long it takes.
        let later = now + window * 10;
        let (_, given_up) = taken
            .refused_again("odd", unexplained.clone(), later, window, window)
            .expect("held");
        assert!(!given_up, "an outage dead-letters nothing");
        // Other files load while this one keeps failing: it is the file's fault.
        taken.succeeded(later + Duration::from_secs(1));
        let (_, given_up) = taken
            .refused_again("odd", unexplained, later + Duration::from_secs(2), window, window)
            .expect("held");
        assert!(given_up);
    }
}
