//! The invariants of DESIGN.md, measured at a quiet moment through clients that bypass
//! the fault proxy.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet};

use pipeline_runtime::AwsClients;

use super::observer::Observations;
use crate::stack::{item_number, item_text, list_shards, read_shard, scan_table};
use pipelinectl::generate::Summary as Sent;

/// The measured state against what was sent.
#[derive(Debug, Default, Clone)]
pub struct Verdict {
    /// Warehouse rows, and distinct event ids among them.
    pub rows: i64,
    pub distinct_rows: i64,
    /// Rejected records in `errors/`: lines, and distinct stream records among them
    /// (a record re-read after a crash may be written to `errors/` twice).
    pub reject_lines: u64,
    pub rejects: u64,
    /// Σ |LevelState − recount of PlayerState| over the levels.
    pub level_drift: i64,
    pub level_detail: String,
    /// PlayerState items, and the players with a level in the warehouse.
    pub players: u64,
    pub players_expected: u64,
    /// Players whose PlayerState is not their latest event in the warehouse.
    pub players_wrong: Vec<String>,
    /// `lease table: shard` pairs not read to their end.
    pub shards_unread: Vec<String>,
    pub shards_checked: usize,
}

impl Verdict {
    /// Whether every invariant holds for what was sent.
    pub fn holds(&self, sent: &Sent) -> bool {
        self.problems(sent).is_empty()
    }

    /// The invariants that do not hold, one line each.
    pub fn problems(&self, sent: &Sent) -> Vec<String> {
        let mut problems = Vec::new();
        let distinct_valid = i64::try_from(sent.distinct_valid()).unwrap_or(i64::MAX);
        if self.rows != distinct_valid || self.distinct_rows != self.rows {
            problems.push(format!(
                "warehouse rows {} ({} distinct ids) != distinct valid events sent {}",
                self.rows,
                self.distinct_rows,
                sent.distinct_valid()
            ));
        }
        if self.rejects != sent.malformed_records {
            problems.push(format!(
                "errors/ holds {} distinct rejected records != malformed records sent {}",
                self.rejects, sent.malformed_records
            ));
        }
        if self.level_drift != 0 {
            problems.push(format!(
                "LevelState drifts from the recount of PlayerState by {}: {}",
                self.level_drift, self.level_detail
            ));
        }
        if self.players != self.players_expected || !self.players_wrong.is_empty() {
            problems.push(format!(
                "PlayerState has {} players, the warehouse {}; not at their latest event: {:?}",
                self.players,
                self.players_expected,
                self.players_wrong.iter().take(5).collect::<Vec<_>>()
            ));
        }
        if !self.shards_unread.is_empty() {
            problems.push(format!("shards not read to their end: {:?}", self.shards_unread));
        }
        problems
    }
}

/// Which lease table reads which stream.
#[derive(Debug, Clone)]
pub struct Readers {
    pub stream: String,
    pub lease_tables: Vec<String>,
}

/// The names the checks read.
#[derive(Debug, Clone)]
pub struct Checked {
    pub bucket: String,
    pub level_state: String,
    pub player_state: String,
    pub readers: Vec<Readers>,
}

/// Measures verdicts, reading each `errors/` file once across calls.
pub struct Checker {
    aws: AwsClients,
    sql: tokio_postgres::Client,
    names: Checked,
    rejected_by_file: HashMap<String, Vec<(String, String, u64)>>,
}

/// `a` compared with `b` as the decimal numbers Kinesis sequence numbers are.
fn compare_sequences(a: &str, b: &str) -> Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

impl Checker {
    pub fn new(aws: AwsClients, sql: tokio_postgres::Client, names: Checked) -> Self {
        Self {
            aws,
            sql,
            names,
            rejected_by_file: HashMap::new(),
        }
    }

    pub async fn measure(&mut self, seen: &Observations) -> Result<Verdict, String> {
        let mut verdict = Verdict::default();
        self.warehouse(&mut verdict).await?;
        self.rejects(&mut verdict).await?;
        self.live_state(&mut verdict).await?;
        self.shards(&mut verdict, seen).await?;
        Ok(verdict)
    }

    async fn warehouse(&self, verdict: &mut Verdict) -> Result<(), String> {
        let row = self
            .sql
            .query_one("SELECT COUNT(*), COUNT(DISTINCT event_id) FROM events", &[])
            .await
            .map_err(|e| format!("counting rows: {e}"))?;
        verdict.rows = row.get(0);
        verdict.distinct_rows = row.get(1);
        Ok(())
    }

    async fn rejects(&mut self, verdict: &mut Verdict) -> Result<(), String> {
        let s3 = self.aws.s3();
        let bucket = &self.names.bucket;
        let listing: Vec<_> = s3
            .list_objects_v2()
            .bucket(bucket)
            .prefix("errors/")
            .into_paginator()
            .send()
            .collect::<Vec<_>>()
            .await;
        let mut keys = Vec::new();
        for page in listing {
            let page = page.map_err(|e| format!("listing errors/: {e}"))?;
            keys.extend(page.contents().iter().filter_map(|o| o.key().map(str::to_string)));
        }
        for key in &keys {
            if self.rejected_by_file.contains_key(key) {
                continue;
            }
            let mut records = Vec::new();
            for record in pipelinectl::summary::rejected_records(&s3, bucket, key)
                .await
                .map_err(|e| e.to_string())?
            {
                if record.reason.is_empty() {
                    return Err(format!("{key}: a rejected record without a reason"));
                }
                records.push((record.shard, record.sequence, record.subsequence));
            }
            self.rejected_by_file.insert(key.clone(), records);
        }
        let mut distinct = HashSet::new();
        for key in &keys {
            for record in self.rejected_by_file.get(key).into_iter().flatten() {
                verdict.reject_lines += 1;
                distinct.insert(record);
            }
        }
        verdict.rejects = distinct.len() as u64;
        Ok(())
    }

    async fn live_state(&self, verdict: &mut Verdict) -> Result<(), String> {
        let players = scan_table(&self.aws, &self.names.player_state)
            .await
            .map_err(|e| format!("scanning PlayerState: {e}"))?;
        let levels = scan_table(&self.aws, &self.names.level_state)
            .await
            .map_err(|e| format!("scanning LevelState: {e}"))?;
        let mut recount: BTreeMap<String, i64> = BTreeMap::new();
        for item in &players {
            *recount.entry(item_text(item, "levelId")).or_insert(0) += 1;
        }
        let mut counted: BTreeMap<String, i64> = BTreeMap::new();
        for item in &levels {
            counted.insert(
                item_text(item, "levelId"),
                item_number(item, "playerCount").unwrap_or(0),
            );
        }
        let mut detail = Vec::new();
        for level in recount
            .keys()
            .chain(counted.keys())
            .collect::<std::collections::BTreeSet<_>>()
        {
            let (have, want) = (
                counted.get(level).copied().unwrap_or(0),
                recount.get(level).copied().unwrap_or(0),
            );
            if have != want {
                verdict.level_drift += (have - want).abs();
                detail.push(format!("{level}: LevelState {have}, PlayerState {want}"));
            }
        }
        verdict.level_detail = detail.join("; ");

        // Each player's latest event in the warehouse: its time, and its level when no
        // other event of that player has the same time.
        let rows = self
            .sql
            .query(
                "SELECT client_id, level_id, (EXTRACT(EPOCH FROM event_timestamp) * 1000)::BIGINT \
                 FROM events WHERE level_id IS NOT NULL",
                &[],
            )
            .await
            .map_err(|e| format!("reading players: {e}"))?;
        let mut latest: HashMap<String, (i64, Option<String>)> = HashMap::new();
        for row in rows {
            let (player, level, at): (String, String, i64) = (row.get(0), row.get(1), row.get(2));
            let entry = latest.entry(player).or_insert((i64::MIN, None));
            match at.cmp(&entry.0) {
                Ordering::Greater => *entry = (at, Some(level)),
                Ordering::Equal if entry.1.as_deref() != Some(level.as_str()) => entry.1 = None,
                _ => {}
            }
        }
        verdict.players = players.len() as u64;
        verdict.players_expected = latest.len() as u64;
        for item in &players {
            let player = item_text(item, "playerId");
            let at = item_number(item, "lastUpdated");
            let level = item_text(item, "levelId");
            match latest.get(&player) {
                Some((want_at, want_level))
                    if Some(*want_at) == at && want_level.as_ref().is_none_or(|l| *l == level) => {}
                want => verdict
                    .players_wrong
                    .push(format!("{player}: has ({level}, {at:?}), latest event {want:?}")),
            }
        }
        Ok(())
    }

    async fn shards(&self, verdict: &mut Verdict, seen: &Observations) -> Result<(), String> {
        let mut checkpoints: HashMap<&str, HashMap<String, String>> = HashMap::new();
        for table in self.names.readers.iter().flat_map(|r| &r.lease_tables) {
            let items = scan_table(&self.aws, table)
                .await
                .map_err(|e| format!("scanning {table}: {e}"))?;
            checkpoints.insert(
                table,
                items
                    .iter()
                    .map(|item| (item_text(item, "leaseKey"), item_text(item, "checkpoint")))
                    .collect(),
            );
        }
        for readers in &self.names.readers {
            let shards = list_shards(&self.aws, &readers.stream).await;
            for shard in &shards {
                let id = shard.shard_id().to_string();
                let closed = shard
                    .sequence_number_range()
                    .and_then(|r| r.ending_sequence_number())
                    .is_some();
                let last = if closed {
                    None
                } else {
                    read_shard(&self.aws, &readers.stream, &id)
                        .await
                        .last()
                        .map(|r| r.sequence_number().to_string())
                };
                for table in &readers.lease_tables {
                    verdict.shards_checked += 1;
                    let key = (table.clone(), id.clone());
                    let lease = checkpoints.get(table.as_str()).and_then(|c| c.get(&id));
                    let read = if closed {
                        seen.ended.contains(&key) || lease.is_some_and(|c| c == "SHARD_END")
                    } else {
                        match (&last, lease) {
                            (None, _) => true,
                            (Some(last), Some(checkpoint)) => {
                                checkpoint.chars().all(|c| c.is_ascii_digit())
                                    && compare_sequences(checkpoint, last) != Ordering::Less
                            }
                            (Some(_), None) => false,
                        }
                    };
                    if !read {
                        verdict
                            .shards_unread
                            .push(format!("{table}: {id} (checkpoint {lease:?}, last record {last:?})"));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_compare_as_numbers() {
        assert_eq!(compare_sequences("10", "9"), Ordering::Greater);
        assert_eq!(compare_sequences("49590", "49590"), Ordering::Equal);
        assert_eq!(compare_sequences("49589", "49590"), Ordering::Less);
    }
}
