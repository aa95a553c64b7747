//! An in-memory lease table and worker table with the conditional semantics of
//! `shard_consumer::LeaseTable` on DynamoDB (every lease write conditional on the
//! counter read before it, and on the owner for the holder's own writes), the faults of
//! [`crate::faults`], and the ground truth the invariants need: when each lease's
//! counter and each worker's heartbeat last moved, who took a lease from whom, and
//! whether its holder was dead by then. It also counts the capacity units DynamoDB
//! would bill for every call, for the scale figures.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use pipeline_runtime::error::{AwsError, ErrorKind};
use shard_consumer::lease::Lease;
use shard_consumer::lease_table::LeaseTableError;
use shard_consumer::membership::WorkerEntry;
use shard_consumer::{Checkpoint, LeaseStore};

use crate::faults::{Call, Faults, Gate};
use crate::observer::Observer;
use crate::world::{World, lock};

/// A take (or hand-over) of a lease, as the table saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Take {
    pub by: String,
    pub at: Duration,
    pub from: Option<String>,
    /// The previous holder had stopped reading by then: it was dead (its heartbeat had
    /// stood still for a failover time) or it handed the lease over itself. Otherwise
    /// the lease was taken from a live holder.
    pub expired: bool,
}

/// A worker's entry, when its heartbeat last moved, and when it last moved after
/// standing still for a failover time (others may have judged it dead before then:
/// nothing it held from before may be read any more).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerRecord {
    pub entry: WorkerEntry,
    pub moved_at: Duration,
    pub lapsed_at: Option<Duration>,
}

/// What the table knows about a lease beyond its item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseMeta {
    /// When the counter last moved.
    pub changed_at: Duration,
    /// Since when nobody owns it, if nobody does.
    pub free_since: Option<Duration>,
    pub last_take: Option<Take>,
    /// Who released it last.
    pub released_by: Option<String>,
}

/// The kinds of request a worker makes of the two tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Request {
    LeaseScan,
    LeaseGet,
    /// Create, take, hand-off, release, delete.
    LeaseWrite,
    Checkpoint,
    WorkerScan,
    Heartbeat,
    WorkerDelete,
}

impl Request {
    pub const ALL: [Request; 7] = [
        Request::LeaseScan,
        Request::LeaseGet,
        Request::LeaseWrite,
        Request::Checkpoint,
        Request::WorkerScan,
        Request::Heartbeat,
        Request::WorkerDelete,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Request::LeaseScan => "lease table scans",
            Request::LeaseGet => "lease reads",
            Request::LeaseWrite => "lease writes (create, take, hand-off, release, delete)",
            Request::Checkpoint => "checkpoints",
            Request::WorkerScan => "worker table scans",
            Request::Heartbeat => "heartbeats",
            Request::WorkerDelete => "worker entry deletes",
        }
    }
}

/// Requests of one kind and what DynamoDB bills for them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Units {
    pub requests: u64,
    pub read_units: f64,
    pub write_units: f64,
}

impl Units {
    fn add(&mut self, other: &Units) {
        self.requests += other.requests;
        self.read_units += other.read_units;
        self.write_units += other.write_units;
    }
}

/// DynamoDB's bill for the calls made, in request units, by kind of request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    by_request: BTreeMap<Request, Units>,
}

impl Usage {
    fn charge(&mut self, request: Request, read_units: f64, write_units: f64) {
        self.by_request.entry(request).or_default().add(&Units {
            requests: 1,
            read_units,
            write_units,
        });
    }

    pub fn of(&self, request: Request) -> Units {
        self.by_request.get(&request).copied().unwrap_or_default()
    }

    pub fn total(&self) -> Units {
        let mut total = Units::default();
        for units in self.by_request.values() {
            total.add(units);
        }
        total
    }

    pub fn add(&mut self, other: &Usage) {
        for (request, units) in &other.by_request {
            self.by_request.entry(*request).or_default().add(units);
        }
    }

    /// What was billed since `earlier` (a copy of this usage taken then).
    pub fn since(&self, earlier: &Usage) -> Usage {
        let mut by_request = self.by_request.clone();
        for (request, before) in &earlier.by_request {
            let units = by_request.entry(*request).or_default();
            units.requests -= before.requests;
            units.read_units -= before.read_units;
            units.write_units -= before.write_units;
        }
        Usage { by_request }
    }
}

/// A real worker id (host name, process id, suffix) is about this long; the
/// simulation's are shorter, so sizes are counted as if they were real.
pub const REAL_WORKER_ID_BYTES: usize = 36;
/// A real sequence number has 56 digits.
const REAL_SEQUENCE_BYTES: usize = 56;

fn number_size(n: u64) -> usize {
    n.to_string().len().div_ceil(2) + 1
}

/// DynamoDB's size of a lease item: attribute names plus values (numbers about one
/// byte per two digits, plus one), with ids and sequence numbers as long as real ones.
pub fn item_size(lease: &Lease) -> usize {
    let number = number_size;
    let (checkpoint, sub) = lease.checkpoint.to_kcl();
    let checkpoint = match lease.checkpoint {
        // A busy shard's lease soon holds a sequence number: count it so from the start.
        Checkpoint::ShardEnd => checkpoint.len(),
        _ => checkpoint.len().max(REAL_SEQUENCE_BYTES),
    };
    let mut size = "leaseKey".len() + lease.key.len();
    size += "leaseCounter".len() + number(lease.counter);
    size += "checkpoint".len() + checkpoint;
    size += "checkpointSubSequenceNumber".len() + number(sub);
    size += "ownerSwitchesSinceCheckpoint".len() + number(lease.owner_switches_since_checkpoint);
    if let Some(owner) = &lease.owner {
        size += "leaseOwner".len() + owner.len().max(REAL_WORKER_ID_BYTES);
    }
    if !lease.parent_shard_ids.is_empty() {
        size += "parentShardId".len() + lease.parent_shard_ids.iter().map(String::len).sum::<usize>();
    }
    size
}

/// DynamoDB's size of a worker item.
pub fn worker_item_size(entry: &WorkerEntry) -> usize {
    let mut size = "workerId".len() + entry.worker_id.len().max(REAL_WORKER_ID_BYTES);
    size += "heartbeat".len() + number_size(entry.heartbeat);
    size += "leases".len() + number_size(entry.leases);
    size += "leaseEpoch".len() + number_size(entry.lease_epoch);
    if !entry.wants.is_empty() {
        size += "wants".len() + entry.wants.iter().map(String::len).sum::<usize>();
    }
    size
}

/// Strongly consistent read units of a scan of items of these sizes (4 KB a unit, per 1 MB page).
fn scan_units(sizes: impl Iterator<Item = usize>) -> f64 {
    let bytes: usize = sizes.sum();
    let pages = bytes.div_ceil(1 << 20).max(1);
    (bytes.div_ceil(4096).max(1) + pages - 1) as f64
}

/// The table's state.
#[derive(Debug)]
pub struct TableModel {
    leases: BTreeMap<String, (Lease, LeaseMeta)>,
    workers: BTreeMap<String, WorkerRecord>,
    /// Workers whose entry was deleted, and when.
    departed: BTreeMap<String, Duration>,
    failover: Duration,
    /// Every key that ever reached SHARD_END.
    finished: BTreeSet<String>,
    observer: Arc<Observer>,
    usage: Usage,
}

fn condition_failed(operation: &'static str) -> LeaseTableError {
    LeaseTableError::Aws(AwsError::new(
        operation,
        ErrorKind::ConditionFailed,
        "ConditionalCheckFailedException: the conditional request failed",
    ))
}

impl TableModel {
    pub fn new(failover: Duration, observer: Arc<Observer>) -> Self {
        Self {
            leases: BTreeMap::new(),
            workers: BTreeMap::new(),
            departed: BTreeMap::new(),
            failover,
            finished: BTreeSet::new(),
            observer,
            usage: Usage::default(),
        }
    }

    pub fn leases(&self) -> impl Iterator<Item = (&Lease, &LeaseMeta)> {
        self.leases.values().map(|(l, m)| (l, m))
    }

    pub fn lease(&self, key: &str) -> Option<(&Lease, &LeaseMeta)> {
        self.leases.get(key).map(|(l, m)| (l, m))
    }

    pub fn workers(&self) -> impl Iterator<Item = &WorkerRecord> {
        self.workers.values()
    }

    /// When a lease's holder stopped being able to read it, if it did: its heartbeat
    /// stood still for the failover time (or, for a holder without an entry, the
    /// lease's counter did), or it lapsed after it got the lease.
    pub fn holder_gone_since(&self, lease: &Lease, meta: &LeaseMeta, now: Duration) -> Option<Duration> {
        let owner = lease.owner.as_deref()?;
        let acquired = meta
            .last_take
            .as_ref()
            .filter(|t| t.by == owner)
            .map_or(Duration::ZERO, |t| t.at);
        let (moved_at, lapsed_at) = match self.workers.get(owner) {
            Some(worker) => (worker.moved_at, worker.lapsed_at),
            // Its entry is gone: deleted by itself once it stopped, or as long dead.
            None if self.departed.contains_key(owner) => return self.departed.get(owner).copied(),
            // Never had one (a worker of another kind): its lease counter tells.
            None => (meta.changed_at, None),
        };
        if now.saturating_sub(moved_at) >= self.failover {
            return Some(moved_at + self.failover);
        }
        lapsed_at.filter(|lapsed| *lapsed > acquired)
    }

    /// When a lease became free to take, if it is: at once when unowned, else once its
    /// holder could no longer read it.
    pub fn takeable_since(&self, lease: &Lease, meta: &LeaseMeta, now: Duration) -> Option<Duration> {
        match &lease.owner {
            None => Some(meta.free_since.unwrap_or(meta.changed_at)),
            Some(_) => self.holder_gone_since(lease, meta, now),
        }
    }

    pub fn is_finished(&self, key: &str) -> bool {
        self.finished.contains(key)
    }

    pub fn usage(&self) -> Usage {
        self.usage.clone()
    }

    /// A write is billed 1 unit per KB of the larger of the item before and after;
    /// lease items stay well under 1 KB.
    fn charge_write(&mut self, request: Request, lease: Option<&Lease>) {
        let units = lease.map_or(1, |l| item_size(l).div_ceil(1024).max(1)) as f64;
        self.usage.charge(request, 0.0, units);
    }

    /// Scan with strong consistency: 1 unit per 4 KB read, per 1 MB page.
    pub fn list(&mut self) -> Vec<Lease> {
        let leases: Vec<Lease> = self.leases.values().map(|(l, _)| l.clone()).collect();
        self.usage
            .charge(Request::LeaseScan, scan_units(leases.iter().map(item_size)), 0.0);
        leases
    }

    /// Scan of the worker table, with strong consistency.
    pub fn list_workers(&mut self) -> Vec<WorkerEntry> {
        let entries: Vec<WorkerEntry> = self.workers.values().map(|w| w.entry.clone()).collect();
        self.usage.charge(
            Request::WorkerScan,
            scan_units(entries.iter().map(worker_item_size)),
            0.0,
        );
        entries
    }

    pub fn heartbeat(&mut self, entry: &WorkerEntry, now: Duration) {
        let units = worker_item_size(entry).div_ceil(1024).max(1) as f64;
        self.usage.charge(Request::Heartbeat, 0.0, units);
        let moved = self
            .workers
            .get(&entry.worker_id)
            .is_none_or(|w| w.entry.heartbeat != entry.heartbeat);
        let before = self.workers.get(&entry.worker_id);
        let moved_at = match before {
            Some(worker) if !moved => worker.moved_at,
            _ => now,
        };
        let lapsed_at = match before {
            Some(worker) if moved && now.saturating_sub(worker.moved_at) >= self.failover => Some(now),
            Some(worker) => worker.lapsed_at,
            // Back after its entry was deleted: what it held before is not its own.
            None => self.departed.remove(&entry.worker_id).map(|_| now),
        };
        // A string set has no order: read back sorted, as `LeaseTable::workers` does.
        let mut entry = entry.clone();
        entry.wants.sort();
        self.workers.insert(
            entry.worker_id.clone(),
            WorkerRecord {
                entry,
                moved_at,
                lapsed_at,
            },
        );
    }

    pub fn remove_worker(&mut self, worker_id: &str, heartbeat: Option<u64>, now: Duration) {
        self.usage.charge(Request::WorkerDelete, 0.0, 1.0);
        let matches = self
            .workers
            .get(worker_id)
            .is_some_and(|w| heartbeat.is_none_or(|h| w.entry.heartbeat == h));
        if matches {
            self.workers.remove(worker_id);
            self.departed.insert(worker_id.to_string(), now);
        }
    }

    pub fn get(&mut self, key: &str) -> Option<Lease> {
        self.usage.charge(Request::LeaseGet, 1.0, 0.0);
        self.leases.get(key).map(|(l, _)| l.clone())
    }

    pub fn create(&mut self, lease: &Lease, now: Duration) -> bool {
        self.charge_write(Request::LeaseWrite, Some(lease));
        if self.leases.contains_key(&lease.key) {
            return false;
        }
        if self.finished.contains(&lease.key) {
            self.observer.violation(
                now,
                format!(
                    "shard {} got a new lease after its lease had reached SHARD_END",
                    lease.key
                ),
            );
        }
        let meta = LeaseMeta {
            changed_at: now,
            free_since: lease.owner.is_none().then_some(now),
            last_take: None,
            released_by: None,
        };
        self.leases.insert(lease.key.clone(), (lease.clone(), meta));
        true
    }

    pub fn take(&mut self, read: &Lease, owner: &str, now: Duration) -> Result<u64, LeaseTableError> {
        let stored = self.leases.get(&read.key).cloned();
        self.charge_write(Request::LeaseWrite, stored.as_ref().map(|(l, _)| l));
        let Some((stored, stored_meta)) = stored else {
            return Err(condition_failed("dynamodb:UpdateItem"));
        };
        if stored.counter != read.counter {
            return Err(condition_failed("dynamodb:UpdateItem"));
        }
        // The holder could no longer read it: dead, or lapsed since it got the lease.
        let expired = match stored.owner.as_deref() {
            None => true,
            Some(holder) if holder == owner => true,
            Some(_) => self.holder_gone_since(&stored, &stored_meta, now).is_some(),
        };
        if !expired {
            self.observer.violation(
                now,
                format!(
                    "{owner} took lease {} from {:?}, a worker alive within the failover time",
                    read.key, stored.owner
                ),
            );
        }
        let Some((lease, meta)) = self.leases.get_mut(&read.key) else {
            return Err(condition_failed("dynamodb:UpdateItem"));
        };
        let switches = if lease.owner.as_deref() == Some(owner) {
            read.owner_switches_since_checkpoint
        } else {
            read.owner_switches_since_checkpoint + 1
        };
        meta.last_take = Some(Take {
            by: owner.to_string(),
            at: now,
            from: lease.owner.clone(),
            expired,
        });
        lease.owner = Some(owner.to_string());
        lease.counter = read.counter + 1;
        lease.owner_switches_since_checkpoint = switches;
        meta.changed_at = now;
        meta.free_since = None;
        Ok(lease.counter)
    }

    /// A write of the holder's: applies only while `owner` holds the lease at `counter`.
    fn holder_write(
        &mut self,
        request: Request,
        key: &str,
        owner: &str,
        counter: u64,
        now: Duration,
        update: impl FnOnce(&mut Lease, &mut LeaseMeta),
    ) -> Result<u64, LeaseTableError> {
        let stored = self.leases.get(key).map(|(l, _)| l.clone());
        self.charge_write(request, stored.as_ref());
        let Some((lease, meta)) = self.leases.get_mut(key) else {
            return Err(condition_failed("dynamodb:UpdateItem"));
        };
        if lease.counter != counter || lease.owner.as_deref() != Some(owner) {
            return Err(condition_failed("dynamodb:UpdateItem"));
        }
        lease.counter = counter + 1;
        meta.changed_at = now;
        update(lease, meta);
        Ok(counter + 1)
    }

    pub fn hand_off(
        &mut self,
        key: &str,
        owner: &str,
        counter: u64,
        to: &str,
        now: Duration,
    ) -> Result<u64, LeaseTableError> {
        self.holder_write(Request::LeaseWrite, key, owner, counter, now, |lease, meta| {
            lease.owner = Some(to.to_string());
            lease.owner_switches_since_checkpoint += 1;
            meta.free_since = None;
            meta.last_take = Some(Take {
                by: to.to_string(),
                at: now,
                from: Some(owner.to_string()),
                expired: true,
            });
        })
    }

    pub fn checkpoint(
        &mut self,
        key: &str,
        owner: &str,
        counter: u64,
        checkpoint: &Checkpoint,
        now: Duration,
    ) -> Result<u64, LeaseTableError> {
        let before = self.leases.get(key).map(|(l, _)| l.checkpoint.clone());
        let written = self.holder_write(Request::Checkpoint, key, owner, counter, now, |lease, _| {
            lease.checkpoint = checkpoint.clone();
            lease.owner_switches_since_checkpoint = 0;
        })?;
        let backwards = match (&before, checkpoint) {
            (Some(Checkpoint::ShardEnd), to) => !to.is_shard_end(),
            (Some(Checkpoint::At(from)), Checkpoint::At(to)) => to < from,
            (Some(Checkpoint::At(_)), Checkpoint::TrimHorizon | Checkpoint::Latest | Checkpoint::AtTimestamp) => true,
            _ => false,
        };
        if backwards {
            self.observer.violation(
                now,
                format!("checkpoint of {key} moved back from {before:?} to {checkpoint} (by {owner})"),
            );
        }
        if checkpoint.is_shard_end() {
            self.finished.insert(key.to_string());
        }
        Ok(written)
    }

    pub fn release(&mut self, key: &str, owner: &str, counter: u64, now: Duration) -> Result<(), LeaseTableError> {
        self.holder_write(Request::LeaseWrite, key, owner, counter, now, |lease, meta| {
            lease.owner = None;
            meta.free_since = Some(now);
            meta.released_by = Some(owner.to_string());
        })
        .map(|_| ())
    }

    pub fn delete_finished(&mut self, key: &str) {
        let stored = self.leases.get(key).map(|(l, _)| l.clone());
        self.charge_write(Request::LeaseWrite, stored.as_ref());
        if stored.is_some_and(|l| l.checkpoint.is_shard_end()) {
            self.leases.remove(key);
        }
    }
}

/// One worker's client of the simulated lease table.
#[derive(Debug, Clone)]
pub struct SimLeaseStore {
    pub table: Arc<Mutex<TableModel>>,
    pub world: Arc<World>,
    pub faults: Arc<Faults>,
    pub gate: Gate,
}

impl SimLeaseStore {
    async fn call<T>(
        &self,
        call: Call,
        operation: &'static str,
        apply: impl FnOnce(&mut TableModel, Duration) -> Result<T, LeaseTableError>,
        on_condition: impl FnOnce() -> Result<T, LeaseTableError>,
    ) -> Result<T, LeaseTableError> {
        let fate = self.faults.plan(&self.gate, call).await;
        tokio::time::sleep(fate.request).await;
        if let Some(kind) = fate.fail_before {
            return Err(LeaseTableError::Aws(AwsError::new(operation, kind, "injected fault")));
        }
        let result = {
            let mut table = lock(&self.table);
            apply(&mut table, self.world.now())
        };
        tokio::time::sleep(fate.response).await;
        self.gate.pass().await;
        match fate.lose_answer {
            None => result,
            // The SDK's retry of the applied write met the write's own condition.
            Some(ErrorKind::ConditionFailed) => on_condition(),
            Some(kind) => Err(LeaseTableError::Aws(AwsError::new(
                operation,
                kind,
                "injected fault: the write was applied, its answer lost",
            ))),
        }
    }
}

impl LeaseStore for SimLeaseStore {
    fn name(&self) -> &str {
        "simulated-lease-table"
    }

    fn ensure_exists(&self, _create: bool) -> BoxFuture<'_, Result<(), LeaseTableError>> {
        Box::pin(async { Ok(()) })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<Lease>, LeaseTableError>> {
        Box::pin(self.call(
            Call::Read,
            "dynamodb:Scan",
            |table, _| Ok(table.list()),
            || Err(condition_failed("dynamodb:Scan")),
        ))
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Lease>, LeaseTableError>> {
        Box::pin(self.call(
            Call::Read,
            "dynamodb:GetItem",
            move |table, _| Ok(table.get(key)),
            || Err(condition_failed("dynamodb:GetItem")),
        ))
    }

    fn create<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<bool, LeaseTableError>> {
        // The table answers a failed `attribute_not_exists` as "someone wrote it first".
        Box::pin(self.call(
            Call::Write,
            "dynamodb:PutItem",
            move |table, now| Ok(table.create(lease, now)),
            || Ok(false),
        ))
    }

    fn take<'a>(&'a self, lease: &'a Lease, owner: &'a str) -> BoxFuture<'a, Result<u64, LeaseTableError>> {
        Box::pin(self.call(
            Call::Write,
            "dynamodb:UpdateItem",
            move |table, now| table.take(lease, owner, now),
            || Err(condition_failed("dynamodb:UpdateItem")),
        ))
    }

    fn hand_off<'a>(
        &'a self,
        key: &'a str,
        owner: &'a str,
        counter: u64,
        to: &'a str,
    ) -> BoxFuture<'a, Result<u64, LeaseTableError>> {
        Box::pin(self.call(
            Call::Write,
            "dynamodb:UpdateItem",
            move |table, now| table.hand_off(key, owner, counter, to, now),
            || Err(condition_failed("dynamodb:UpdateItem")),
        ))
    }

    fn checkpoint<'a>(
        &'a self,
        key: &'a str,
        owner: &'a str,
        counter: u64,
        checkpoint: &'a Checkpoint,
    ) -> BoxFuture<'a, Result<u64, LeaseTableError>> {
        Box::pin(self.call(
            Call::Checkpoint,
            "dynamodb:UpdateItem",
            move |table, now| table.checkpoint(key, owner, counter, checkpoint, now),
            || Err(condition_failed("dynamodb:UpdateItem")),
        ))
    }

    fn release<'a>(&'a self, key: &'a str, owner: &'a str, counter: u64) -> BoxFuture<'a, Result<(), LeaseTableError>> {
        Box::pin(self.call(
            Call::Write,
            "dynamodb:UpdateItem",
            move |table, now| table.release(key, owner, counter, now),
            || Err(condition_failed("dynamodb:UpdateItem")),
        ))
    }

    fn delete_finished<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), LeaseTableError>> {
        Box::pin(self.call(
            Call::Write,
            "dynamodb:DeleteItem",
            move |table, _| {
                table.delete_finished(key);
                Ok(())
            },
            || Ok(()),
        ))
    }

    fn workers(&self) -> BoxFuture<'_, Result<Vec<WorkerEntry>, LeaseTableError>> {
        Box::pin(self.call(
            Call::Read,
            "dynamodb:Scan",
            |table, _| Ok(table.list_workers()),
            || Err(condition_failed("dynamodb:Scan")),
        ))
    }

    fn heartbeat<'a>(&'a self, entry: &'a WorkerEntry) -> BoxFuture<'a, Result<(), LeaseTableError>> {
        Box::pin(self.call(
            Call::Write,
            "dynamodb:PutItem",
            move |table, now| {
                table.heartbeat(entry, now);
                Ok(())
            },
            // An unconditional put meets no condition: its retry just lands again.
            || Ok(()),
        ))
    }

    fn remove_worker<'a>(
        &'a self,
        worker_id: &'a str,
        heartbeat: Option<u64>,
    ) -> BoxFuture<'a, Result<(), LeaseTableError>> {
        Box::pin(self.call(
            Call::Write,
            "dynamodb:DeleteItem",
            move |table, now| {
                table.remove_worker(worker_id, heartbeat, now);
                Ok(())
            },
            || Ok(()),
        ))
    }
}
