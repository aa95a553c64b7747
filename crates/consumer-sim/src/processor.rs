//! The application of a simulated worker: it checks each hand-over against the models'
//! ground truth (order, gaps, finished shards, two readers), takes a little time to
//! make its output durable, and checkpoints now and then, sometimes in the middle of a
//! KPL aggregate.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use shard_consumer::Checkpoint;
use shard_consumer::processor::{Batch, Checkpointer, ProcessorError, ProcessorFactory, RecordProcessor};

use crate::faults::Gate;
use crate::lease_table::TableModel;
use crate::observer::Observer;
use crate::stream::{SimRecord, StreamModel};
use crate::world::{World, lock};

/// What every worker's processors share.
#[derive(Debug, Clone)]
pub struct Shared {
    pub world: Arc<World>,
    pub stream: Arc<Mutex<StreamModel>>,
    pub table: Arc<Mutex<TableModel>>,
    pub observer: Arc<Observer>,
    pub failover: Duration,
}

/// Makes the processors of one worker.
#[derive(Debug, Clone)]
pub struct SimProcessorFactory {
    pub shared: Shared,
    pub worker: String,
    pub gate: Gate,
}

impl ProcessorFactory<SimRecord> for SimProcessorFactory {
    type Processor = SimProcessor;
    fn create(&self, shard_id: &str) -> SimProcessor {
        SimProcessor {
            shared: self.shared.clone(),
            worker: self.worker.clone(),
            gate: self.gate.clone(),
            shard: shard_id.to_string(),
            start: (0, 0),
            next: (0, 0),
            unsaved: false,
        }
    }
}

/// A user record's place: (stream record index, index inside it).
type Place = (usize, u32);

/// One shard's processor on one worker.
#[derive(Debug)]
pub struct SimProcessor {
    shared: Shared,
    worker: String,
    gate: Gate,
    shard: String,
    /// The first place this processor may be handed (after its start checkpoint).
    start: Place,
    /// The place after the last one handed.
    next: Place,
    unsaved: bool,
}

/// The place after `place` in a shard.
fn successor(stream: &StreamModel, shard: &str, (index, sub): Place) -> Place {
    let subs = stream
        .shard(shard)
        .and_then(|s| s.records.get(index))
        .map_or(1, |r| r.subs);
    if sub + 1 < subs {
        (index, sub + 1)
    } else {
        (index + 1, 0)
    }
}

impl SimProcessor {
    fn violation(&self, what: String) {
        self.shared.observer.violation(self.shared.world.now(), what);
    }

    /// Checks a hand-over against the ground truth and records it.
    fn check_handed(&mut self, records: &[SimRecord]) {
        let now = self.shared.world.now();
        let Some(first) = records.first() else {
            return;
        };
        let observer = &self.shared.observer;
        // Whose lease is it now?
        let (finished, holder) = {
            let table = lock(&self.shared.table);
            let holder = table
                .lease(&self.shard)
                .map(|(lease, meta)| (lease.owner.clone(), meta.last_take.clone(), meta.released_by.clone()));
            (table.is_finished(&self.shard), holder)
        };
        observer.checked(3);
        if finished {
            self.violation(format!("{} read finished shard {} again", self.worker, self.shard));
        }
        match holder {
            None => self.violation(format!(
                "{} handed records of {} which has no lease",
                self.worker, self.shard
            )),
            Some((owner, take, released_by)) if owner.as_deref() != Some(self.worker.as_str()) => {
                if let (Some(owner), Some(take)) = (owner, take)
                    && take.by == owner
                    && (take.expired || now >= take.at + self.shared.failover)
                {
                    self.violation(format!(
                        "{} read {} at {:?} while {owner} held it since {:?} (taken {})",
                        self.worker,
                        self.shard,
                        now,
                        take.at,
                        if take.expired {
                            "after it expired"
                        } else {
                            "from a live holder"
                        }
                    ));
                } else if released_by.as_deref() == Some(self.worker.as_str()) {
                    self.violation(format!("{} read {} after releasing its lease", self.worker, self.shard));
                }
            }
            Some(_) => {}
        }
        // Order and gaps, against the stream itself.
        let place = (first.index, first.sub);
        let (gap_trimmed, in_order, successors_ok) = {
            let stream = lock(&self.shared.stream);
            let trimmed = stream.shard(&self.shard).map_or(0, |s| stream.trimmed(s, now));
            let gap_trimmed = place <= self.next || place.0 <= trimmed;
            let mut expected = place;
            let mut successors_ok = true;
            for record in records {
                if (record.index, record.sub) != expected {
                    successors_ok = false;
                    break;
                }
                expected = successor(&stream, &self.shard, expected);
            }
            (gap_trimmed, place >= self.start, successors_ok)
        };
        if !gap_trimmed {
            self.violation(format!(
                "{} skipped records of {}: expected {:?}, handed {:?} (nothing trimmed there)",
                self.worker, self.shard, self.next, place
            ));
        }
        if !in_order {
            self.violation(format!(
                "{} handed {:?} of {}, covered by the checkpoint it started from ({:?})",
                self.worker, place, self.shard, self.start
            ));
        }
        if !successors_ok {
            self.violation(format!(
                "{} handed records of {} out of order or with holes inside a batch",
                self.worker, self.shard
            ));
        }
        let redelivered = records.iter().take_while(|r| (r.index, r.sub) < self.next).count() as u64;
        let last = records.last().map_or(place, |r| (r.index, r.sub));
        self.next = {
            let stream = lock(&self.shared.stream);
            successor(&stream, &self.shard, last)
        };
        observer.trace(&format!("{} {} {:?} {}", self.worker, self.shard, place, records.len()));
        observer.handed(
            &self.shard,
            records.iter().map(|r| r.index),
            records.len() as u64,
            redelivered,
        );
    }
}

impl RecordProcessor<SimRecord> for SimProcessor {
    async fn initialize(&mut self, shard_id: &str, checkpoint: &Checkpoint) {
        let finished = lock(&self.shared.table).is_finished(shard_id);
        if finished {
            self.violation(format!("{} started finished shard {shard_id} again", self.worker));
        }
        let stream = lock(&self.shared.stream);
        self.start = match checkpoint {
            Checkpoint::At(position) => {
                let seq = position.sequence.as_str().parse::<u64>().unwrap_or(u64::MAX);
                let index = stream
                    .shard(shard_id)
                    .map_or(0, |s| s.records.partition_point(|r| r.seq < seq));
                successor(&stream, shard_id, (index, position.subsequence as u32))
            }
            _ => (0, 0),
        };
        self.next = self.start;
    }

    async fn process(
        &mut self,
        batch: &Batch<SimRecord>,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        self.check_handed(&batch.records);
        // Output on its way to durable storage; a stalled worker's output waits too.
        let world = self.shared.world.clone();
        tokio::time::sleep(world.between(Duration::from_millis(5), Duration::from_millis(60))).await;
        self.gate.pass().await;
        self.unsaved = true;
        let roll = world.below(100);
        let position = if roll < 50 {
            batch.records.last()
        } else if roll < 65 {
            batch.records.get(world.below(batch.records.len()))
        } else {
            None
        };
        if let Some(record) = position {
            checkpointer.checkpoint(&record.position).await?;
            self.unsaved = checkpointer.last_delivered() != Some(&record.position);
        }
        Ok(())
    }

    async fn idle(&mut self, checkpointer: &mut Checkpointer) -> Result<(), ProcessorError> {
        if self.unsaved {
            checkpointer.checkpoint_delivered().await?;
            self.unsaved = false;
        }
        Ok(())
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) -> Result<(), ProcessorError> {
        checkpointer.checkpoint_delivered().await?;
        self.unsaved = false;
        Ok(())
    }

    async fn shutdown_requested(&mut self, checkpointer: &mut Checkpointer) -> Result<(), ProcessorError> {
        checkpointer.checkpoint_delivered().await?;
        self.unsaved = false;
        Ok(())
    }
}
