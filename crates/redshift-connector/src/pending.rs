//! One `files` shard's loads: the pointers gathered since the last load, when the next
//! load is due, the files a load could not take (held back and retried alone until
//! they load or go to the dead letters), and how far the shard may be checkpointed.
//! Pure.
//!
//! A held file never holds the other files back: they load as usual, and the warehouse's
//! `loaded_files` keeps them exactly once if the shard is read again. Only the
//! checkpoint waits until no file is held.
//!
//! A file is given up (dead-lettered) only when its window has passed and the fault is
//! surely the file's: the warehouse named it, or other loads succeeded while it kept
//! failing. During an outage of the warehouse every load fails: then nothing is given
//! up, everything waits.

use std::time::Duration;

use event_model::FilePointer;
use shard_consumer::RecordPosition;
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

/// The loads of one shard.
#[derive(Debug, Default)]
pub struct PendingLoad {
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
    /// Whether `position` was already gathered or loaded.
    pub fn covers(&self, position: &RecordPosition) -> bool {
        self.last
            .as_ref()
            .or(self.committed_through.as_ref())
            .is_some_and(|last| position <= last)
    }

    /// Notes a record of the stream, a pointer or not (`None`: it was dead-lettered).
    pub fn add(&mut self, position: &RecordPosition, pointer: Option<FilePointer>, now: Instant) -> Added {
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

    /// The gathered records reached a limit, or a held file waits for its next try.
    pub fn is_due(&self, limits: &LoadLimits, now: Instant) -> bool {
        let bytes: u64 = self.files.iter().map(|p| p.pointer.bytes).sum();
        let gathered = self.started.is_some_and(|s| now.duration_since(s) >= limits.max_age)
            || self.files.len() >= limits.max_files
            || bytes >= limits.max_bytes;
        gathered || self.held.iter().any(|h| h.next_try <= now)
    }

    /// Files gathered, not yet loaded.
    pub fn files(&self) -> usize {
        self.files.len()
    }

    pub fn held(&self) -> &[Held] {
        &self.held
    }

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
        })
    }

    /// A held file loaded on its own.
    pub fn held_batch(held: &Held, bucket: &str) -> LoadBatch {
        let sequence = held.file.position.sequence.as_str();
        LoadBatch {
            bucket: bucket.to_string(),
            files: vec![held.file.pointer.clone()],
            manifest_key: manifest_key(sequence, sequence),
        }
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

    /// The gathered files committed (those held aside excepted): gather the next load.
    pub fn committed(&mut self) {
        if let Some(last) = self.last.take() {
            self.committed_through = Some(last);
        }
        self.files.clear();
        self.first = None;
        self.started = None;
    }

    /// Where to checkpoint: the last committed record, once no file is held.
    pub fn checkpoint(&self) -> Option<&RecordPosition> {
        if self.held.is_empty() && self.files.is_empty() {
            self.committed_through.as_ref()
        } else {
            None
        }
    }

    /// The checkpoint was written.
    pub fn checkpointed(&mut self) {
        self.committed_through = None;
    }

    /// The lease moved: the next owner reads again from the checkpoint.
    pub fn clear(&mut self) {
        *self = Self::default();
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

    #[test]
    fn pointers_are_kept_once_and_the_load_is_due_at_a_limit() {
        let now = Instant::now();
        let limits = LoadLimits {
            max_files: 3,
            max_bytes: 1_000,
            max_age: Duration::from_secs(5),
        };
        let mut load = PendingLoad::default();
        assert!(
            !load.is_due(&limits, now + Duration::from_secs(60)),
            "empty is never due"
        );
        assert_eq!(load.add(&at("10"), Some(pointer("a", 10)), now), Added::Pointer);
        assert_eq!(load.add(&at("10"), Some(pointer("a", 10)), now), Added::Seen);
        assert_eq!(load.add(&at("11"), Some(pointer("a", 10)), now), Added::Duplicate);
        assert_eq!(load.add(&at("12"), None, now), Added::Pointer);
        assert_eq!(load.files(), 1);
        assert!(!load.is_due(&limits, now + Duration::from_secs(4)));
        assert!(load.is_due(&limits, now + Duration::from_secs(5)), "age");
        load.add(&at("13"), Some(pointer("b", 995)), now);
        assert!(load.is_due(&limits, now), "bytes");
        let batch = load.batch("lake").expect("batch");
        assert_eq!(batch.manifest_key, "manifests/10-13.manifest");
        assert_eq!(batch.files.len(), 2);
        load.committed();
        assert_eq!(load.checkpoint(), Some(&at("13")));
        assert_eq!(
            load.add(&at("13"), Some(pointer("c", 1)), now),
            Added::Seen,
            "loaded already"
        );
    }

    #[test]
    fn a_held_file_holds_only_the_checkpoint_until_it_loads_or_is_given_up() {
        let now = Instant::now();
        let window = Duration::from_secs(300);
        let retry_in = Duration::from_secs(10);
        let mut load = PendingLoad::default();
        load.add(&at("1"), Some(pointer("good", 1)), now);
        load.add(&at("2"), Some(pointer("bad", 1)), now);
        load.add(&at("3"), Some(pointer("later", 1)), now);
        assert!(load.hold("bad", refusal(), now, retry_in));
        let rest = load.batch("lake").expect("the rest");
        assert_eq!(
            rest.files.iter().map(|f| f.key.as_str()).collect::<Vec<_>>(),
            ["good", "later"],
            "the other files load at once"
        );
        load.committed();
        assert_eq!(load.checkpoint(), None, "the held file holds the checkpoint");
        load.add(&at("4"), Some(pointer("bad", 1)), now);
        assert_eq!(load.files(), 0, "a held file's pointer sent again is a duplicate");
        assert!(load.held_due(now).is_empty());
        assert_eq!(load.held_due(now + retry_in), vec!["bad".to_string()]);
        let (held, given_up) = load
            .refused_again("bad", refusal(), now + retry_in, retry_in, window)
            .expect("held");
        assert_eq!((held.attempts, given_up), (2, false));
        let (_, given_up) = load
            .refused_again("bad", refusal(), now + window, retry_in, window)
            .expect("held");
        assert!(given_up);
        let held = load.release("bad").expect("held");
        assert_eq!(held.file.position, at("2"));
        load.committed();
        assert_eq!(
            load.checkpoint(),
            Some(&at("4")),
            "past the dead letter and the duplicate"
        );
        load.checkpointed();
        assert_eq!(load.checkpoint(), None);
        assert_eq!(
            PendingLoad::held_batch(&held, "lake").manifest_key,
            "manifests/2-2.manifest"
        );
    }

    #[test]
    fn a_file_failing_unexplained_is_given_up_only_once_other_loads_succeed() {
        let now = Instant::now();
        let window = Duration::from_secs(60);
        let unexplained = Refusal {
            attributed: false,
            ..refusal()
        };
        let mut load = PendingLoad::default();
        load.add(&at("1"), Some(pointer("odd", 1)), now);
        assert!(load.hold("odd", unexplained.clone(), now, window));
        // The warehouse is down: nothing loads, the file waits however long it takes.
        let later = now + window * 10;
        let (_, given_up) = load
            .refused_again("odd", unexplained.clone(), later, window, window)
            .expect("held");
        assert!(!given_up, "an outage dead-letters nothing");
        // Other files load while this one keeps failing: it is the file's fault.
        load.succeeded(later + Duration::from_secs(1));
        let (_, given_up) = load
            .refused_again("odd", unexplained, later + Duration::from_secs(2), window, window)
            .expect("held");
        assert!(given_up);
    }
}
