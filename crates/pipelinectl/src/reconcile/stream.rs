//! How far the level stage is along PlayerState's stream: per stream shard, its guard
//! (the last sequence number whose change LevelState holds), the records after the
//! level stage's checkpoint that the guard does not cover (not applied yet), and the
//! last sequence number the shard holds. Two views with the same ends say PlayerState
//! did not change between them.
//!
//! A shard is read from the level stage's checkpoint to the first empty answer: an
//! iterator right after a record the level stage read points where the next records
//! are (DynamoDB Streams answers empty before the end of a shard only over a stretch
//! with nothing left in it, as at the trim horizon of an old shard). This makes
//! `reconcile-levels` a second reader of each shard, for the pause only: DynamoDB
//! Streams allows two at a time, the level stage being the other.

use std::collections::{BTreeMap, HashMap};

use pipeline_runtime::{AwsError, Classified, ErrorKind};
use shard_consumer::dynamodb_streams::DynamoDbStreamSource;
use shard_consumer::error::ReadError;
use shard_consumer::lease_table::LeaseTableError;
use shard_consumer::position::{Checkpoint, InvalidSequenceNumber};
use shard_consumer::{LeaseTable, SequenceNumber, Source, StartPosition};

use crate::aws::level_state;

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

/// One stream shard as seen once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardView {
    /// The level stage's guard: LevelState holds every change up to it (`None`: none yet).
    pub guard: Option<SequenceNumber>,
    /// Records the level stage has still to apply.
    pub pending: usize,
    /// The last sequence number in the shard as far as read (`None`: empty so far).
    pub end: Option<SequenceNumber>,
    /// The level stage read it to its end (SHARD_END): no guard of it moves again.
    pub finished: bool,
}

/// Every stream shard, by id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamView {
    pub shards: BTreeMap<String, ShardView>,
}

impl StreamView {
    /// Records the level stage has still to apply, over all shards.
    pub fn pending(&self) -> usize {
        self.shards.values().map(|s| s.pending).sum()
    }

    /// No change in PlayerState between `self` and `later`: the same shards, each
    /// ending at the same record (a checkpoint or guard moving over records already
    /// there is no change).
    pub fn same_ends(&self, later: &StreamView) -> bool {
        self.shards.len() == later.shards.len()
            && self.shards.iter().all(|(id, shard)| {
                later
                    .shards
                    .get(id)
                    .is_some_and(|l| l.end == shard.end && l.finished == shard.finished)
            })
    }

    /// The guards a correction is conditioned on: those of unfinished shards, as read.
    pub fn guards(&self) -> Vec<(String, Option<SequenceNumber>)> {
        self.shards
            .iter()
            .filter(|(_, s)| !s.finished)
            .map(|(id, s)| (id.clone(), s.guard.clone()))
            .collect()
    }
}

/// A shard's view from its guard, the level stage's checkpoint and the sequence numbers
/// of the records read after that checkpoint, in order.
pub fn shard_view(guard: Option<SequenceNumber>, checkpoint: &Checkpoint, after: &[SequenceNumber]) -> ShardView {
    let pending = after.iter().filter(|s| guard.as_ref().is_none_or(|g| *s > g)).count();
    let from_checkpoint = match checkpoint {
        Checkpoint::At(position) => Some(position.sequence.clone()),
        _ => None,
    };
    let end = after
        .iter()
        .chain(from_checkpoint.as_ref())
        .chain(guard.as_ref())
        .max()
        .cloned();
    ShardView {
        guard,
        pending,
        end,
        finished: checkpoint.is_shard_end(),
    }
}

/// Where to read a shard from: after the level stage's checkpoint, else its oldest record.
fn start_of(checkpoint: &Checkpoint) -> StartPosition {
    match checkpoint {
        Checkpoint::At(position) => StartPosition::AfterSequence(position.sequence.clone()),
        _ => StartPosition::TrimHorizon,
    }
}

/// The level stage's guard of `shard_id`, parsed.
async fn read_guard(
    dynamodb: &aws_sdk_dynamodb::Client,
    transitions_table: &str,
    shard_id: &str,
) -> Result<Option<SequenceNumber>, StreamError> {
    let text = level_state::read_guard(dynamodb, transitions_table, shard_id).await?;
    text.map(|t| SequenceNumber::parse(&t))
        .transpose()
        .map_err(|source| StreamError::Guard {
            shard_id: shard_id.to_string(),
            source,
        })
}

/// The sequence numbers of every record of `shard_id` from `start` to the end of what
/// the shard holds now: until a read comes back empty (an open shard) or without a next
/// iterator (a closed one read to its end).
async fn read_after(
    source: &DynamoDbStreamSource,
    shard_id: &str,
    start: &StartPosition,
) -> Result<Vec<SequenceNumber>, StreamError> {
    let mut sequences = Vec::new();
    let mut iterator = match source.shard_iterator(shard_id, start).await {
        Ok(iterator) => iterator,
        Err(ReadError::ShardNotFound(_)) => return Ok(sequences),
        // The checkpoint's record aged out of the stream: what is left is all after it.
        Err(ReadError::Trimmed(_)) if *start != StartPosition::TrimHorizon => {
            source.shard_iterator(shard_id, &StartPosition::TrimHorizon).await?
        }
        Err(error) => return Err(error.into()),
    };
    loop {
        let read = source.read(shard_id, &iterator, source.max_read_limit()).await?;
        let empty = read.records.is_empty();
        sequences.extend(read.records.into_iter().map(|r| r.position.sequence));
        match read.next_iterator {
            Some(next) if !empty => iterator = next,
            _ => return Ok(sequences),
        }
    }
}

/// Every shard of PlayerState's stream, read now.
pub async fn read_view(
    source: &DynamoDbStreamSource,
    dynamodb: &aws_sdk_dynamodb::Client,
    level_lease_table: &LeaseTable,
    transitions_table: &str,
) -> Result<StreamView, StreamError> {
    let checkpoints: HashMap<String, Checkpoint> = level_lease_table
        .list()
        .await?
        .into_iter()
        .map(|l| (l.key, l.checkpoint))
        .collect();
    let mut view = StreamView::default();
    for shard in source.list_shards().await? {
        let checkpoint = checkpoints.get(&shard.id).cloned().unwrap_or(Checkpoint::TrimHorizon);
        if checkpoint.is_shard_end() {
            view.shards.insert(shard.id, shard_view(None, &checkpoint, &[]));
            continue;
        }
        // The guard before the records: a chunk applied in between shows as pending,
        // never as applied.
        let guard = read_guard(dynamodb, transitions_table, &shard.id).await?;
        let after = read_after(source, &shard.id, &start_of(&checkpoint)).await?;
        view.shards
            .insert(shard.id.clone(), shard_view(guard, &checkpoint, &after));
    }
    Ok(view)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shard_consumer::position::RecordPosition;

    fn seq(n: u64) -> SequenceNumber {
        SequenceNumber::parse(&n.to_string()).expect("sequence")
    }

    fn at(n: u64) -> Checkpoint {
        Checkpoint::At(RecordPosition {
            sequence: seq(n),
            subsequence: 0,
        })
    }

    #[test]
    fn records_after_the_checkpoint_beyond_the_guard_are_pending() {
        // Applied up to 120 (guard), checkpointed at 100: 110 and 120 are applied, not
        // yet checkpointed; 130 is not applied.
        let view = shard_view(Some(seq(120)), &at(100), &[seq(110), seq(120), seq(130)]);
        assert_eq!(view.pending, 1);
        assert_eq!(view.end, Some(seq(130)));
        let caught_up = shard_view(Some(seq(120)), &at(100), &[seq(110), seq(120)]);
        assert_eq!(caught_up.pending, 0);
        // Nothing applied yet: every record is pending.
        assert_eq!(shard_view(None, &Checkpoint::TrimHorizon, &[seq(5), seq(9)]).pending, 2);
        // Records without a level change move the checkpoint, not the guard.
        let quiet = shard_view(Some(seq(50)), &at(90), &[]);
        assert_eq!((quiet.pending, quiet.end), (0, Some(seq(90))));
        // 100 < 99999999999999999999: compared as numbers, not as text.
        assert_eq!(shard_view(Some(seq(99_999)), &at(99_999), &[seq(100_000)]).pending, 1);
    }

    #[test]
    fn a_new_record_or_shard_is_a_change_a_moved_checkpoint_is_not() {
        let mut before = StreamView::default();
        before
            .shards
            .insert("s1".into(), shard_view(Some(seq(10)), &at(8), &[seq(9), seq(10)]));
        let mut checkpointed = StreamView::default();
        checkpointed
            .shards
            .insert("s1".into(), shard_view(Some(seq(10)), &at(10), &[]));
        assert!(before.same_ends(&checkpointed));
        let mut written = checkpointed.clone();
        written
            .shards
            .insert("s1".into(), shard_view(Some(seq(10)), &at(10), &[seq(11)]));
        assert!(!before.same_ends(&written));
        let mut new_shard = checkpointed.clone();
        new_shard
            .shards
            .insert("s2".into(), shard_view(None, &Checkpoint::TrimHorizon, &[]));
        assert!(!before.same_ends(&new_shard));
        assert_eq!(before.guards(), [("s1".to_string(), Some(seq(10)))]);
    }
}
