//! What a chaos run did and measured, as a table and as a list of broken promises.

use std::collections::BTreeMap;
use std::time::Duration;

use super::ChaosArgs;
use super::observer::Observations;
use super::verdict::Verdict;
use crate::fault_proxy::FaultTally;
use pipelinectl::generate::Summary as Sent;

/// Everything the run did and measured.
#[derive(Debug)]
pub struct Report {
    pub args: ChaosArgs,
    /// What the generators sent, together.
    pub sent: Sent,
    /// Events the KPL generator sent (aggregated).
    pub kpl_events: u64,
    pub kills: BTreeMap<&'static str, u64>,
    pub reshards: Vec<String>,
    /// The services' AWS calls and the faults injected into them, both proxies together.
    pub faults: FaultTally,
    pub verdict: Verdict,
    pub seen: Observations,
    pub crashes: Vec<String>,
    pub unclean_stops: Vec<String>,
    /// From the end of the chaos to the moment every invariant held.
    pub catch_up: Duration,
}

impl Report {
    pub fn kills_total(&self) -> u64 {
        self.kills.values().sum()
    }

    /// Every invariant that does not hold, and every sign that the chaos did not happen.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = self.verdict.problems(&self.sent);
        if !self.seen.negative_counts.is_empty() {
            problems.push(format!(
                "negative LevelState counts seen: {:?}",
                self.seen.negative_counts
            ));
        }
        if !self.seen.moved_back.is_empty() {
            problems.push(format!(
                "PlayerState moved back in event time: {:?}",
                self.seen.moved_back
            ));
        }
        if !self.seen.read_again.is_empty() {
            problems.push(format!(
                "finished shards leased and read again: {:?}",
                self.seen.read_again
            ));
        }
        if !self.crashes.is_empty() {
            problems.push(format!("instances exited on their own: {:?}", self.crashes));
        }
        if !self.unclean_stops.is_empty() {
            problems.push(format!(
                "instances did not stop cleanly on SIGTERM: {:?}",
                self.unclean_stops
            ));
        }
        if self.kills_total() == 0
            || self.reshards.len() != 2
            || (self.args.fault_rate > 0.0 && self.faults.faults() == 0)
        {
            problems.push(format!(
                "the chaos did not happen: {} kills, reshards {:?}, {} faults",
                self.kills_total(),
                self.reshards,
                self.faults.faults()
            ));
        }
        if self.verdict.shards_checked == 0 {
            problems.push("no shard was checked".into());
        }
        problems
    }

    /// The run as a table: what was done to the pipeline, then what it holds.
    pub fn table(&self) -> String {
        let sent = &self.sent;
        let verdict = &self.verdict;
        let mark = |ok: bool| if ok { "ok" } else { "MISMATCH" };
        let kills = self
            .kills
            .iter()
            .map(|(service, n)| format!("{service} {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let rows_ok = verdict.rows == i64::try_from(sent.distinct_valid()).unwrap_or(i64::MAX)
            && verdict.rows == verdict.distinct_rows;
        let rows = [
            (
                "events sent",
                sent.events.to_string(),
                format!(
                    "{} s at {} ev/s, {} of them in KPL aggregates, {} out of order",
                    self.args.send_secs, self.args.rate, self.kpl_events, sent.out_of_order
                ),
            ),
            ("duplicates", sent.duplicates.to_string(), "events sent twice".into()),
            (
                "malformed",
                sent.malformed_records.to_string(),
                "malformed records sent, their duplicates included".into(),
            ),
            (
                "kills",
                self.kills_total().to_string(),
                format!("SIGKILL, then a new instance: {kills}"),
            ),
            ("reshards", self.reshards.len().to_string(), self.reshards.join("; ")),
            (
                "injected faults",
                self.faults.faults().to_string(),
                format!(
                    "of {} AWS calls: {} throttled, {} failed before, {} failed after the emulator did the work",
                    self.faults.requests, self.faults.throttled, self.faults.failed_before, self.faults.failed_after
                ),
            ),
            (
                "rows",
                verdict.rows.to_string(),
                format!(
                    "= distinct valid events sent {}: {}",
                    sent.distinct_valid(),
                    mark(rows_ok)
                ),
            ),
            (
                "rejects",
                verdict.rejects.to_string(),
                format!(
                    "distinct records in errors/ ({} lines) = malformed sent {}: {}",
                    verdict.reject_lines,
                    sent.malformed_records,
                    mark(verdict.rejects == sent.malformed_records)
                ),
            ),
            (
                "drift",
                verdict.level_drift.to_string(),
                format!(
                    "LevelState vs recount of {} PlayerState items: {}; {} negative counts and {} moves back in {} polls",
                    verdict.players,
                    mark(verdict.level_drift == 0),
                    self.seen.negative_counts.len(),
                    self.seen.moved_back.len(),
                    self.seen.polls
                ),
            ),
            (
                "shards read",
                (verdict.shards_checked - verdict.shards_unread.len()).to_string(),
                format!(
                    "of {} (shard, application) pairs read to their end: {}; finished shards read again: {}",
                    verdict.shards_checked,
                    mark(verdict.shards_unread.is_empty()),
                    self.seen.read_again.len()
                ),
            ),
            (
                "catch-up",
                format!("{:.0} s", self.catch_up.as_secs_f64()),
                "from the end of the chaos to every invariant holding".into(),
            ),
        ];
        let mut out = String::from("| measure | value | detail |\n|---|---:|---|\n");
        for (name, value, detail) in rows {
            out.push_str(&format!("| {name} | {value} | {detail} |\n"));
        }
        out
    }
}
