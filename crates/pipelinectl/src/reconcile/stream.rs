//! How far the level stage is along PlayerState's stream: per stream shard, its guard
//! (the last sequence number whose change LevelState holds), the records the level
//! stage has not processed yet (after both its checkpoint and its guard), and the last
//! sequence number the shard holds. Two views with the same ends say PlayerState did
//! not change between them.
//!
//! Which shards are read ([`plan_looks`]): not a shard the level stage finished (its
//! lease at SHARD_END), nor a closed shard without a lease whose descendant has one
//! (shard sync deleted its lease at SHARD_END once its children started; DynamoDB
//! Streams still lists it for 24 h): the level stage never reads either again, so
//! nothing in them is pending and their guards never move. Every other shard is read
//! from the level stage's checkpoint, or from its oldest record when the level stage
//! has not started it (then every record not within its guard is pending).
//!
//! GetRecords may answer empty before the end of a shard ("it might take multiple
//! calls to get to a portion of the shard that contains stream records"), so an empty
//! page ends nothing ([`read_after`]): a closed shard is read until there is no next
//! iterator, an open one until [`TIP_EMPTY_PAGES`] empty pages in a row; a shard not
//! read to such an end within [`MAX_PAGES_PER_SHARD`] counts as unresolved, and the
//! correction waits as it does for pending records. An open shard's tip is a judgement,
//! not a proof: the recount is trusted only when a second look, after it, ends every
//! shard at the same record.
//!
//! This makes `reconcile-levels` a second reader of each shard, for the pause only:
//! DynamoDB Streams allows two at a time, the level stage being the other.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use pipeline_runtime::{AwsError, Classified, ErrorKind};
use shard_consumer::dynamodb_streams::DynamoDbStreamSource;
use shard_consumer::error::ReadError;
use shard_consumer::lease::Lease;
use shard_consumer::lease_table::LeaseTableError;
use shard_consumer::position::{Checkpoint, InvalidSequenceNumber};
use shard_consumer::shard_sync::passed_by_lineage;
use shard_consumer::{LeaseTable, SequenceNumber, Shard, Source, StartPosition, StreamRecord};

/// Why the stream could not be read to its end.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("{}", .0.explain())]
    Aws(#[from] AwsError),
    #[error("PlayerState's stream: {0}")]
    Read(#[from] ReadError),
    #[error("level stage lease table: {0}")]
    Leases(#[from] LeaseTableError),
    #[error("guard of stream shard {shard_id}: {source}")]
    Guard {
        shard_id: String,
        source: InvalidSequenceNumber,
    },
}

impl Classified for StreamError {
    fn kind(&self) -> ErrorKind {
        match self {
            StreamError::Aws(error) => error.kind,
            StreamError::Read(error) => error.kind(),
            StreamError::Leases(error) => error.kind(),
            StreamError::Guard { .. } => ErrorKind::Fatal,
        }
    }
}

/// Empty GetRecords pages in a row after which an open shard counts as read to its
/// tip. One empty page may be a stretch with nothing in it mid-shard; three in a row,
/// each from where the last one left off, without a record, is taken as the tip.
pub const TIP_EMPTY_PAGES: u32 = 3;

/// GetRecords calls per shard per look: 1,000 records a page, so a closed shard of a
/// million records (hours of a busy game, for a shard the level stage has not started)
/// is read whole; past it the shard counts as unresolved and the next look reads it again.
pub const MAX_PAGES_PER_SHARD: u32 = 1_000;

/// How a read of a shard ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reached {
    /// A closed shard read to its end: GetRecords gave no next iterator.
    End,
    /// An open shard read to its tip: [`TIP_EMPTY_PAGES`] empty pages in a row.
    Tip,
    /// The shard left the stream (or its records were trimmed) while read.
    Gone,
    /// The page budget ran out first: what follows is unknown.
    Unresolved,
}

/// The sequence numbers read from one shard, in order, and how the read ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardRead {
    pub sequences: Vec<SequenceNumber>,
    pub reached: Reached,
}

/// One stream shard as seen once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardView {
    /// The level stage's guard: LevelState holds every change up to it (`None`: none yet).
    pub guard: Option<SequenceNumber>,
    /// Records the level stage has not processed yet: after its checkpoint and its guard.
    pub pending: usize,
    /// The last sequence number in the shard as far as read (`None`: empty so far).
    pub end: Option<SequenceNumber>,
    /// How the read ended; `None`: not read, since the level stage is done with it
    /// (SHARD_END, or passed by lineage) and its guard never moves again.
    pub reached: Option<Reached>,
}

impl ShardView {
    /// A shard the level stage is done with.
    pub fn finished() -> Self {
        Self {
            guard: None,
            pending: 0,
            end: None,
            reached: None,
        }
    }

    /// Whether the level stage is done with it ([`ShardView::finished`]).
    pub fn is_finished(&self) -> bool {
        self.reached.is_none()
    }

    /// Whether the level stage may still move its guard: unless it finished the shard,
    /// or the shard is closed, read to its end, and holds nothing unprocessed (then
    /// every record with a level change is within the guard, and a replay of the rest
    /// changes no count, so the guard stays).
    pub fn guard_may_move(&self) -> bool {
        !(self.is_finished() || self.reached == Some(Reached::End) && self.pending == 0)
    }
}

/// Every stream shard, by id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamView {
    pub shards: BTreeMap<String, ShardView>,
}

impl StreamView {
    /// Records the level stage has still to process, over all shards.
    pub fn pending(&self) -> usize {
        self.shards.values().map(|s| s.pending).sum()
    }

    /// Shards not read to an end within the page budget: they may hold anything.
    pub fn unresolved(&self) -> usize {
        self.shards
            .values()
            .filter(|s| s.reached == Some(Reached::Unresolved))
            .count()
    }

    /// No change in PlayerState between `self` and `later`: the same shards, each
    /// ending at the same record, and every shard of `later` read to an end (a
    /// checkpoint or guard moving over records already there is no change).
    pub fn same_ends(&self, later: &StreamView) -> bool {
        later.unresolved() == 0
            && self.shards.len() == later.shards.len()
            && self.shards.iter().all(|(id, shard)| {
                later
                    .shards
                    .get(id)
                    .is_some_and(|l| l.end == shard.end && l.is_finished() == shard.is_finished())
            })
    }

    /// The guards a correction is conditioned on: those the level stage may still move
    /// ([`ShardView::guard_may_move`]), as read. With nothing pending that is the open
    /// shards only: a closed shard's guard is settled once it is read to its end.
    pub fn guards(&self) -> Vec<(String, Option<SequenceNumber>)> {
        self.shards
            .iter()
            .filter(|(_, s)| s.guard_may_move())
            .map(|(id, s)| (id.clone(), s.guard.clone()))
            .collect()
    }
}

/// A shard's view from its guard, the level stage's checkpoint (`None`: no lease) and
/// what was read after that checkpoint. Pending are the records after both: a record
/// at or before the guard was applied; one at or before the checkpoint but after the
/// guard was processed and changed no count (the guard moves only with a count).
pub fn shard_view(guard: Option<SequenceNumber>, checkpoint: Option<&Checkpoint>, read: &ShardRead) -> ShardView {
    let from_checkpoint = match checkpoint {
        Some(Checkpoint::At(position)) => Some(position.sequence.clone()),
        _ => None,
    };
    let processed = guard.iter().chain(from_checkpoint.iter()).max();
    let pending = read
        .sequences
        .iter()
        .filter(|s| processed.is_none_or(|p| *s > p))
        .count();
    let end = read
        .sequences
        .iter()
        .chain(from_checkpoint.as_ref())
        .chain(guard.as_ref())
        .max()
        .cloned();
    ShardView {
        guard,
        pending,
        end,
        reached: Some(read.reached),
    }
}

/// How to look at one listed shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Look {
    /// The level stage is done with it: not read, no guard to check.
    Finished,
    /// Read from `start`; `checkpoint` is the level stage's (`None`: no lease).
    Read {
        start: StartPosition,
        checkpoint: Option<Checkpoint>,
        closed: bool,
    },
}

/// What to do with each listed shard, from the level stage's leases. Finished: a lease
/// at SHARD_END; a closed shard without a lease whose descendant has one, or that a
/// lease names as its parent (shard sync's rule: never leased again). Otherwise read
/// after the checkpoint, or from the oldest record when the shard is not started.
pub fn plan_looks(shards: &[Shard], leases: &[Lease]) -> Vec<(String, Look)> {
    let by_key: HashMap<&str, &Lease> = leases.iter().map(|l| (l.key.as_str(), l)).collect();
    let passed = passed_by_lineage(shards, leases);
    let parents: BTreeSet<&str> = leases
        .iter()
        .flat_map(|l| l.parent_shard_ids.iter().map(String::as_str))
        .collect();
    shards
        .iter()
        .map(|shard| {
            let lease = by_key.get(shard.id.as_str());
            let look = match lease {
                Some(lease) if lease.checkpoint.is_shard_end() => Look::Finished,
                None if shard.closed && (passed.contains(&shard.id) || parents.contains(shard.id.as_str())) => {
                    Look::Finished
                }
                _ => {
                    let checkpoint = lease.map(|l| l.checkpoint.clone());
                    Look::Read {
                        start: start_of(checkpoint.as_ref()),
                        checkpoint,
                        closed: shard.closed,
                    }
                }
            };
            (shard.id.clone(), look)
        })
        .collect()
}

/// Where to read a shard from: after the level stage's checkpoint, else its oldest
/// record (a shard not started, whatever its lease's initial position says).
fn start_of(checkpoint: Option<&Checkpoint>) -> StartPosition {
    match checkpoint {
        Some(Checkpoint::At(position)) => StartPosition::AfterSequence(position.sequence.clone()),
        _ => StartPosition::TrimHorizon,
    }
}

/// The level stage's guard of `shard_id`, parsed.
async fn read_guard(
    dynamodb: &aws_sdk_dynamodb::Client,
    transitions_table: &str,
    shard_id: &str,
) -> Result<Option<SequenceNumber>, StreamError> {
    let text = live_state::transitions::read_guard(dynamodb, transitions_table, shard_id).await?;
    text.map(|t| SequenceNumber::parse(&t))
        .transpose()
        .map_err(|source| StreamError::Guard {
            shard_id: shard_id.to_string(),
            source,
        })
}

/// An iterator at `start`; `None` when the shard left the stream. A position whose
/// record aged out of the stream starts at the oldest record left (all after it).
async fn iterator_at<S: Source>(
    source: &S,
    shard_id: &str,
    start: &StartPosition,
) -> Result<Option<String>, StreamError> {
    match source.shard_iterator(shard_id, start).await {
        Ok(iterator) => Ok(Some(iterator)),
        Err(ReadError::ShardNotFound(_)) => Ok(None),
        Err(ReadError::Trimmed(_)) if *start != StartPosition::TrimHorizon => {
            match source.shard_iterator(shard_id, &StartPosition::TrimHorizon).await {
                Ok(iterator) => Ok(Some(iterator)),
                Err(ReadError::ShardNotFound(_)) => Ok(None),
                Err(error) => Err(error.into()),
            }
        }
        Err(error) => Err(error.into()),
    }
}

/// The sequence numbers of the records of `shard_id` from `start` on, following the
/// next iterator through empty pages: a `closed` shard until there is none, an open one
/// until [`TIP_EMPTY_PAGES`] empty pages in a row, at most `max_pages` GetRecords.
/// Trimmed records, an expired iterator or a shard gone, from GetRecords as from
/// GetShardIterator, re-position the read (after the last record seen) or end it.
pub async fn read_after<S: Source>(
    source: &S,
    shard_id: &str,
    start: &StartPosition,
    closed: bool,
    max_pages: u32,
) -> Result<ShardRead, StreamError> {
    let mut sequences: Vec<SequenceNumber> = Vec::new();
    let gone = |sequences| ShardRead {
        sequences,
        reached: Reached::Gone,
    };
    let Some(mut iterator) = iterator_at(source, shard_id, start).await? else {
        return Ok(gone(sequences));
    };
    let mut empty_in_a_row = 0;
    for _ in 0..max_pages {
        let read = match source.read(shard_id, &iterator, source.max_read_limit()).await {
            Ok(read) => read,
            Err(ReadError::ShardNotFound(_)) => return Ok(gone(sequences)),
            Err(ReadError::Trimmed(_) | ReadError::IteratorExpired) => {
                let from = match sequences.last() {
                    Some(last) => StartPosition::AfterSequence(last.clone()),
                    None => start.clone(),
                };
                match iterator_at(source, shard_id, &from).await? {
                    Some(again) => {
                        iterator = again;
                        continue;
                    }
                    None => return Ok(gone(sequences)),
                }
            }
            Err(error) => return Err(error.into()),
        };
        let empty = read.records.is_empty();
        for record in read.records {
            let sequence = &record.position().sequence;
            // After a re-positioned read, nothing seen is counted twice.
            if sequences.last().is_none_or(|last| sequence > last) {
                sequences.push(sequence.clone());
            }
        }
        let Some(next) = read.next_iterator else {
            return Ok(ShardRead {
                sequences,
                reached: Reached::End,
            });
        };
        iterator = next;
        empty_in_a_row = if empty { empty_in_a_row + 1 } else { 0 };
        if !closed && empty_in_a_row >= TIP_EMPTY_PAGES {
            return Ok(ShardRead {
                sequences,
                reached: Reached::Tip,
            });
        }
    }
    Ok(ShardRead {
        sequences,
        reached: Reached::Unresolved,
    })
}

/// Every shard of PlayerState's stream, read now.
pub async fn read_view(
    source: &DynamoDbStreamSource,
    dynamodb: &aws_sdk_dynamodb::Client,
    level_lease_table: &LeaseTable,
    transitions_table: &str,
) -> Result<StreamView, StreamError> {
    // The leases first: shard sync deletes only a lease at SHARD_END, so a lease gone
    // by the time the shards are listed was read as finished.
    let leases = level_lease_table.list().await?;
    let shards = source.list_shards().await?;
    let mut view = StreamView::default();
    for (shard_id, look) in plan_looks(&shards, &leases) {
        let Look::Read {
            start,
            checkpoint,
            closed,
        } = look
        else {
            view.shards.insert(shard_id, ShardView::finished());
            continue;
        };
        // The guard before the records: a chunk applied in between shows as pending,
        // never as applied.
        let guard = read_guard(dynamodb, transitions_table, &shard_id).await?;
        let read = read_after(source, &shard_id, &start, closed, MAX_PAGES_PER_SHARD).await?;
        if read.reached == Reached::Unresolved {
            tracing::info!(%shard_id, pages = MAX_PAGES_PER_SHARD, "stream shard not read to an end in this look");
        }
        view.shards
            .insert(shard_id, shard_view(guard, checkpoint.as_ref(), &read));
    }
    Ok(view)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::{Arc, Mutex};

    use shard_consumer::position::RecordPosition;
    use shard_consumer::source::ReadResult;

    use super::*;

    fn seq(n: u64) -> SequenceNumber {
        SequenceNumber::parse(&n.to_string()).expect("sequence")
    }

    fn at(n: u64) -> Checkpoint {
        Checkpoint::At(RecordPosition {
            sequence: seq(n),
            subsequence: 0,
        })
    }

    fn read(sequences: &[u64], reached: Reached) -> ShardRead {
        ShardRead {
            sequences: sequences.iter().map(|n| seq(*n)).collect(),
            reached,
        }
    }

    #[derive(Debug, Clone)]
    struct Record(RecordPosition);

    impl StreamRecord for Record {
        fn position(&self) -> &RecordPosition {
            &self.0
        }
        fn size_bytes(&self) -> usize {
            0
        }
    }

    /// One shard as GetRecords pages: iterator `k` reads page `k`. An open shard answers
    /// empty pages past its last one, with a next iterator; a closed one has none after
    /// its last page. `fail` answers a page's first read with an error instead.
    #[derive(Debug, Clone, Default)]
    struct Pages {
        pages: Arc<Vec<Vec<u64>>>,
        closed: bool,
        fail: Arc<Mutex<HashMap<usize, ReadError>>>,
        reads: Arc<AtomicU32>,
    }

    impl Pages {
        fn new(pages: &[&[u64]], closed: bool) -> Self {
            Self {
                pages: Arc::new(pages.iter().map(|p| p.to_vec()).collect()),
                closed,
                ..Self::default()
            }
        }

        fn failing(self, page: usize, error: ReadError) -> Self {
            self.fail.lock().expect("lock").insert(page, error);
            self
        }

        fn reads(&self) -> u32 {
            self.reads.load(Ordering::Relaxed)
        }
    }

    fn aws(what: &str) -> AwsError {
        AwsError::new("dynamodb:GetRecords", ErrorKind::Permanent, what.to_string())
    }

    impl Source for Pages {
        type Record = Record;

        async fn list_shards(&self) -> Result<Vec<Shard>, AwsError> {
            Ok(Vec::new())
        }

        async fn shard_iterator(&self, _shard_id: &str, start: &StartPosition) -> Result<String, ReadError> {
            let page = match start {
                StartPosition::AfterSequence(after) => self
                    .pages
                    .iter()
                    .rposition(|p| p.iter().any(|n| seq(*n) <= *after))
                    .map_or(0, |i| i + 1),
                _ => 0,
            };
            Ok(page.to_string())
        }

        async fn read(&self, _shard_id: &str, iterator: &str, _limit: i32) -> Result<ReadResult<Record>, ReadError> {
            self.reads.fetch_add(1, Ordering::Relaxed);
            let page: usize = iterator.parse().expect("iterator");
            if let Some(error) = self.fail.lock().expect("lock").remove(&page) {
                return Err(error);
            }
            let records = self
                .pages
                .get(page)
                .map(|p| {
                    p.iter()
                        .map(|n| {
                            Record(RecordPosition {
                                sequence: seq(*n),
                                subsequence: 0,
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            let last = page + 1 >= self.pages.len();
            Ok(ReadResult {
                records,
                next_iterator: (!(self.closed && last)).then(|| (page + 1).to_string()),
                millis_behind_latest: None,
                outside_hash_range: 0,
            })
        }

        fn max_read_limit(&self) -> i32 {
            1_000
        }

        fn describe(&self) -> String {
            "pages".into()
        }
    }

    #[tokio::test]
    async fn a_closed_shard_is_read_through_empty_pages_to_its_end() {
        // Empty pages mid-shard, as GetRecords answers from TRIM_HORIZON: stopping at the
        // first one would miss 5, 6 and 9, and the correction would count them twice.
        let shard = Pages::new(&[&[], &[], &[5, 6], &[], &[], &[], &[], &[9]], true);
        let got = read_after(&shard, "s", &StartPosition::TrimHorizon, true, 100)
            .await
            .expect("read");
        assert_eq!(got, read(&[5, 6, 9], Reached::End));
        assert_eq!(shard.reads(), 8);
    }

    #[tokio::test]
    async fn an_open_shard_is_read_until_several_empty_pages_in_a_row() {
        let shard = Pages::new(&[&[], &[3], &[], &[], &[7]], false);
        let got = read_after(&shard, "s", &StartPosition::TrimHorizon, false, 100)
            .await
            .expect("read");
        assert_eq!(got, read(&[3, 7], Reached::Tip), "two empty pages end nothing");
        assert_eq!(shard.reads(), 5 + TIP_EMPTY_PAGES);
        // From the level stage's checkpoint: only what follows it.
        let got = read_after(&shard, "s", &StartPosition::AfterSequence(seq(3)), false, 100)
            .await
            .expect("read");
        assert_eq!(got, read(&[7], Reached::Tip));
    }

    #[tokio::test]
    async fn a_shard_not_read_to_an_end_within_the_budget_is_unresolved() {
        let empty: &[u64] = &[];
        let shard = Pages::new(&[empty; 20], true);
        let got = read_after(&shard, "s", &StartPosition::TrimHorizon, true, 5)
            .await
            .expect("read");
        assert_eq!(got, read(&[], Reached::Unresolved));
        let mut view = StreamView::default();
        view.shards.insert("s".into(), shard_view(None, None, &got));
        assert_eq!((view.pending(), view.unresolved()), (0, 1));
        assert!(!view.same_ends(&view), "an unresolved shard proves no quiet");
    }

    #[tokio::test]
    async fn trimmed_records_and_a_vanished_shard_from_get_records_do_not_stop_the_look() {
        // The iterator's records were trimmed while it was held: read on after the last
        // record seen, nothing counted twice.
        let shard = Pages::new(&[&[1], &[2], &[3]], true).failing(1, ReadError::Trimmed(aws("trimmed")));
        let got = read_after(&shard, "s", &StartPosition::TrimHorizon, true, 100)
            .await
            .expect("read");
        assert_eq!(got, read(&[1, 2, 3], Reached::End));
        let shard = Pages::new(&[&[1], &[2], &[3]], true).failing(1, ReadError::IteratorExpired);
        let got = read_after(&shard, "s", &StartPosition::TrimHorizon, true, 100)
            .await
            .expect("read");
        assert_eq!(got, read(&[1, 2, 3], Reached::End));
        let shard = Pages::new(&[&[1], &[2]], true).failing(1, ReadError::ShardNotFound(aws("gone")));
        let got = read_after(&shard, "s", &StartPosition::TrimHorizon, true, 100)
            .await
            .expect("read");
        assert_eq!(got, read(&[1], Reached::Gone));
    }

    fn shard(id: &str, parents: &[&str], closed: bool) -> Shard {
        Shard {
            id: id.into(),
            parent_ids: parents.iter().map(|p| p.to_string()).collect(),
            closed,
            hash_range: None,
        }
    }

    #[test]
    fn closed_shards_the_level_stage_finished_are_not_read() {
        // Two rollovers: s0 -> s1 -> s2. Shard sync deleted s0's lease once s1 started;
        // s1 is at SHARD_END; s2 is read. x is closed, without a lease, and nothing says
        // it was read: read from its oldest record. y's lease was deleted, and its child
        // (not listed yet) has a lease naming it.
        let shards = [
            shard("s0", &[], true),
            shard("s1", &["s0"], true),
            shard("s2", &["s1"], false),
            shard("x", &[], true),
            shard("y", &[], true),
            shard("n", &["s2"], false),
        ];
        let leases = [
            Lease::new("s1", Checkpoint::ShardEnd, vec!["s0".into()]),
            Lease::new("s2", at(40), vec!["s1".into()]),
            Lease::new("z", Checkpoint::TrimHorizon, vec!["y".into()]),
            Lease::new("n", Checkpoint::TrimHorizon, vec!["s2".into()]),
        ];
        let looks: BTreeMap<String, Look> = plan_looks(&shards, &leases).into_iter().collect();
        assert_eq!(looks["s0"], Look::Finished, "passed by lineage");
        assert_eq!(looks["s1"], Look::Finished);
        assert_eq!(looks["y"], Look::Finished, "a lease names it as a parent");
        assert_eq!(
            looks["s2"],
            Look::Read {
                start: StartPosition::AfterSequence(seq(40)),
                checkpoint: Some(at(40)),
                closed: false
            }
        );
        assert_eq!(
            looks["x"],
            Look::Read {
                start: StartPosition::TrimHorizon,
                checkpoint: None,
                closed: true
            }
        );
        assert_eq!(
            looks["n"],
            Look::Read {
                start: StartPosition::TrimHorizon,
                checkpoint: Some(Checkpoint::TrimHorizon),
                closed: false
            },
            "an open shard is never finished, even when its parent is leased"
        );
    }

    #[test]
    fn pending_is_what_neither_the_guard_nor_the_checkpoint_covers() {
        // Applied up to 120 (guard), checkpointed at 100: 110 and 120 are applied, not
        // yet checkpointed; 130 is not processed.
        let view = shard_view(Some(seq(120)), Some(&at(100)), &read(&[110, 120, 130], Reached::Tip));
        assert_eq!(view.pending, 1);
        assert_eq!(view.end, Some(seq(130)));
        let caught_up = shard_view(Some(seq(120)), Some(&at(100)), &read(&[110, 120], Reached::Tip));
        assert_eq!(caught_up.pending, 0);
        // A shard not started: every record is pending unless within its guard...
        let not_started = shard_view(None, None, &read(&[5, 9], Reached::End));
        assert_eq!(not_started.pending, 2);
        // ...and read to its end and empty, nothing is.
        assert_eq!(shard_view(None, None, &read(&[], Reached::End)).pending, 0);
        // Same-level moves after the guard and up to the checkpoint were processed and
        // changed nothing: not pending (read from the horizon after a re-position).
        let no_ops = shard_view(Some(seq(50)), Some(&at(90)), &read(&[60, 70, 90], Reached::End));
        assert_eq!((no_ops.pending, no_ops.end), (0, Some(seq(90))));
        let quiet = shard_view(Some(seq(50)), Some(&at(90)), &read(&[], Reached::Tip));
        assert_eq!((quiet.pending, quiet.end), (0, Some(seq(90))));
        // 100 < 99999999999999999999: compared as numbers, not as text.
        assert_eq!(
            shard_view(Some(seq(99_999)), Some(&at(99_999)), &read(&[100_000], Reached::Tip)).pending,
            1
        );
    }

    #[test]
    fn a_new_record_or_shard_is_a_change_a_moved_checkpoint_is_not() {
        let mut before = StreamView::default();
        before.shards.insert(
            "s1".into(),
            shard_view(Some(seq(10)), Some(&at(8)), &read(&[9, 10], Reached::Tip)),
        );
        let mut checkpointed = StreamView::default();
        checkpointed.shards.insert(
            "s1".into(),
            shard_view(Some(seq(10)), Some(&at(10)), &read(&[], Reached::Tip)),
        );
        assert!(before.same_ends(&checkpointed));
        let mut written = checkpointed.clone();
        written.shards.insert(
            "s1".into(),
            shard_view(Some(seq(10)), Some(&at(10)), &read(&[11], Reached::Tip)),
        );
        assert!(!before.same_ends(&written));
        let mut new_shard = checkpointed.clone();
        new_shard
            .shards
            .insert("s2".into(), shard_view(None, None, &read(&[], Reached::Tip)));
        assert!(!before.same_ends(&new_shard));
    }

    #[test]
    fn only_guards_the_level_stage_may_still_move_are_conditioned_on() {
        let mut view = StreamView::default();
        view.shards.insert(
            "open".into(),
            shard_view(Some(seq(10)), Some(&at(10)), &read(&[], Reached::Tip)),
        );
        view.shards.insert(
            "closed-read".into(),
            shard_view(Some(seq(5)), Some(&at(7)), &read(&[], Reached::End)),
        );
        view.shards.insert(
            "closed-behind".into(),
            shard_view(Some(seq(5)), Some(&at(5)), &read(&[6], Reached::End)),
        );
        view.shards.insert("finished".into(), ShardView::finished());
        for i in 0..150 {
            view.shards.insert(format!("old-{i:03}"), ShardView::finished());
        }
        assert_eq!(
            view.guards(),
            [
                ("closed-behind".to_string(), Some(seq(5))),
                ("open".to_string(), Some(seq(10)))
            ],
            "150 finished shards of a day of rollovers take no room in a transaction"
        );
    }
}
