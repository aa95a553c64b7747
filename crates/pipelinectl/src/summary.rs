//! `pipelinectl summary`: what the pipeline holds, end to end: objects in the lake,
//! rejected records by reason, rows in the warehouse and the duplicates its loads
//! dropped, players per level and the busiest transitions. Given what `generate` sent
//! (its `--json` line), it waits for the pipeline to catch up and checks the two
//! promises: every distinct valid event loaded once, every malformed record rejected.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use pipeline_runtime::clock::now_ms;
use pipeline_runtime::config::parse_resource_name;
use serde::{Deserialize, Serialize};
use warehouse::{Warehouse, WarehouseArgs};

use crate::aws::lake;

/// The stores `summary` and the live page read besides the warehouse.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// S3 bucket of the data lake.
    #[arg(long, env = "BUCKET", value_parser = parse_resource_name)]
    pub bucket: String,

    /// DynamoDB table with the player count of each level.
    #[arg(long, env = "LEVEL_STATE_TABLE", default_value = "LevelState", value_parser = parse_resource_name)]
    pub level_state_table: String,

    /// DynamoDB table with the transition counts.
    #[arg(long, env = "TRANSITIONS_TABLE", default_value = "Transitions", value_parser = parse_resource_name)]
    pub transitions_table: String,
}

/// What `summary` reads and checks.
#[derive(Debug, Clone, Args)]
pub struct SummaryArgs {
    #[command(flatten)]
    pub stores: StoreArgs,

    /// How many transitions (of the last hour) to show.
    #[arg(long, env = "SUMMARY_TOP_TRANSITIONS", default_value_t = 5)]
    pub top_transitions: usize,

    /// `generate --json`'s output: wait until the pipeline holds what it sent, then
    /// check rows loaded = distinct valid events sent and rejected = malformed sent.
    #[arg(long, env = "SUMMARY_SENT")]
    pub sent: Option<PathBuf>,

    /// An earlier `summary --json`: count only what was added since (rows, files,
    /// rejects), for a pipeline that already held data.
    #[arg(long, env = "SUMMARY_BASELINE")]
    pub baseline: Option<PathBuf>,

    /// How long to wait for the pipeline to catch up with `--sent`.
    #[arg(long, env = "SUMMARY_WAIT_SECS", default_value_t = 120)]
    pub wait_secs: u64,

    /// Print one JSON object instead of text.
    #[arg(long, env = "SUMMARY_JSON", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub json: bool,

    #[command(flatten)]
    pub warehouse: WarehouseArgs,
}

/// Objects under one prefix of the bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Objects {
    pub objects: u64,
    pub bytes: u64,
}

/// One transition and how many players made it in the last hour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub from: String,
    pub to: String,
    pub count: i64,
}

/// What the pipeline holds (or, against a baseline, what was added to it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub events_objects: Objects,
    pub errors_objects: Objects,
    pub manifests_objects: Objects,
    /// Rejected records by reason.
    pub rejected: BTreeMap<String, u64>,
    pub rows_loaded: i64,
    pub files_loaded: i64,
    /// Rows staged by the loads that did not become rows: duplicates dropped.
    pub duplicates_dropped: i64,
    pub levels: Vec<live_state::level_state::LevelCount>,
    pub top_transitions: Vec<Transition>,
}

impl Summary {
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    /// What was added since `before` (levels and transitions are live values, kept).
    pub fn since(&self, before: &Summary) -> Summary {
        let objects = |now: &Objects, then: &Objects| Objects {
            objects: now.objects.saturating_sub(then.objects),
            bytes: now.bytes.saturating_sub(then.bytes),
        };
        let mut rejected = self.rejected.clone();
        for (reason, count) in &before.rejected {
            if let Some(now) = rejected.get_mut(reason) {
                *now = now.saturating_sub(*count);
            }
        }
        rejected.retain(|_, count| *count > 0);
        Summary {
            events_objects: objects(&self.events_objects, &before.events_objects),
            errors_objects: objects(&self.errors_objects, &before.errors_objects),
            manifests_objects: objects(&self.manifests_objects, &before.manifests_objects),
            rejected,
            rows_loaded: self.rows_loaded - before.rows_loaded,
            files_loaded: self.files_loaded - before.files_loaded,
            duplicates_dropped: self.duplicates_dropped - before.duplicates_dropped,
            levels: self.levels.clone(),
            top_transitions: self.top_transitions.clone(),
        }
    }

    pub fn to_text(&self) -> String {
        let kib = |o: &Objects| o.bytes.div_ceil(1024);
        let mut out = String::new();
        out.push_str(&format!(
            "lake:       events/ {} objects ({} KiB), errors/ {} objects ({} KiB), manifests/ {} objects\n",
            self.events_objects.objects,
            kib(&self.events_objects),
            self.errors_objects.objects,
            kib(&self.errors_objects),
            self.manifests_objects.objects
        ));
        let reasons: Vec<String> = self.rejected.iter().map(|(r, n)| format!("{r} {n}")).collect();
        out.push_str(&format!(
            "rejected:   {} records{}\n",
            self.rejected_total(),
            if reasons.is_empty() {
                String::new()
            } else {
                format!(" ({})", reasons.join(", "))
            }
        ));
        out.push_str(&format!(
            "warehouse:  {} rows loaded from {} files; {} duplicates dropped by the loads\n",
            self.rows_loaded, self.files_loaded, self.duplicates_dropped
        ));
        out.push_str("\nplayers per level now:\n");
        out.push_str(&crate::levels::render_table(&self.levels));
        out.push_str("\nbusiest transitions in the last hour:\n");
        if self.top_transitions.is_empty() {
            out.push_str("  (none yet)\n");
        }
        for t in &self.top_transitions {
            out.push_str(&format!("  {:<12} -> {:<12} {:>6}\n", t.from, t.to, t.count));
        }
        out
    }
}

/// What `generate --json` reported (the fields the checks need).
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Sent {
    pub events: u64,
    pub duplicates: u64,
    pub malformed_records: u64,
    pub distinct_valid: u64,
}

/// The two promises, as lines that say whether they hold.
pub fn checks(sent: &Sent, held: &Summary) -> (bool, Vec<String>) {
    let rows_ok = held.rows_loaded == i64::try_from(sent.distinct_valid).unwrap_or(i64::MAX);
    let rejects_ok = held.rejected_total() == sent.malformed_records;
    let mark = |ok: bool| if ok { "ok" } else { "MISMATCH" };
    (
        rows_ok && rejects_ok,
        vec![
            format!(
                "sent:       {} events, {} of them sent twice, {} malformed records",
                sent.events, sent.duplicates, sent.malformed_records
            ),
            format!(
                "check:      rows loaded {} = distinct valid events sent {}: {}",
                held.rows_loaded,
                sent.distinct_valid,
                mark(rows_ok)
            ),
            format!(
                "check:      records rejected {} = malformed records sent {}: {}",
                held.rejected_total(),
                sent.malformed_records,
                mark(rejects_ok)
            ),
        ],
    )
}

/// How many objects and bytes `prefixes` hold together, and their keys.
async fn objects(s3: &aws_sdk_s3::Client, bucket: &str, prefixes: &[String]) -> anyhow::Result<(Objects, Vec<String>)> {
    let mut found = Objects::default();
    let mut keys = Vec::new();
    for prefix in prefixes {
        let listed = lake::list(s3, bucket, prefix)
            .await
            .map_err(|e| anyhow::anyhow!("listing s3://{bucket}/{prefix}: {}", e.explain()))?;
        found.objects += listed.len() as u64;
        found.bytes += listed.iter().map(|o| o.size_bytes).sum::<u64>();
        keys.extend(listed.into_iter().map(|o| o.key));
    }
    Ok((found, keys))
}

/// Rejected records by reason, per `errors/` file. The files never change once
/// written, so a file read on an earlier poll is not read again; a file no longer
/// listed (out of the live page's window) is forgotten.
#[derive(Debug, Default)]
pub struct RejectCounts {
    by_file: BTreeMap<String, BTreeMap<String, u64>>,
}

/// Rejects by reason over the files read, and how many listed files are not read yet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rejected {
    pub by_reason: BTreeMap<String, u64>,
    pub files_unread: u64,
}

impl RejectCounts {
    /// Reads at most `max_new` of the files of `keys` not read yet (each read is kept
    /// as soon as it is done, so a read cut short still advances); forgets the files
    /// not in `keys`; returns the totals over the files of `keys` read.
    async fn update(
        &mut self,
        s3: &aws_sdk_s3::Client,
        bucket: &str,
        keys: &[String],
        max_new: usize,
    ) -> anyhow::Result<Rejected> {
        let listed: std::collections::BTreeSet<&String> = keys.iter().collect();
        self.by_file.retain(|key, _| listed.contains(key));
        let mut read = 0;
        for key in keys {
            if read == max_new {
                break;
            }
            if !self.by_file.contains_key(key) {
                let counts = rejected_in(s3, bucket, key).await?;
                self.by_file.insert(key.clone(), counts);
                read += 1;
            }
        }
        let mut totals = Rejected::default();
        for key in keys {
            match self.by_file.get(key) {
                Some(counts) => {
                    for (reason, count) in counts {
                        *totals.by_reason.entry(reason.clone()).or_insert(0) += count;
                    }
                }
                None => totals.files_unread += 1,
            }
        }
        Ok(totals)
    }

    /// Files whose counts are kept.
    pub fn files(&self) -> usize {
        self.by_file.len()
    }
}

/// Counts the rejected records of one `errors/` file by reason.
async fn rejected_in(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut reasons = BTreeMap::new();
    for record in rejected_records(s3, bucket, key).await? {
        *reasons.entry(record.reason).or_insert(0) += 1;
    }
    Ok(reasons)
}

/// The rejected records of one `errors/` file (gzipped JSON lines).
pub async fn rejected_records(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> anyhow::Result<Vec<event_model::RejectedRecord>> {
    let body = lake::get(s3, bucket, key)
        .await
        .map_err(|e| anyhow::anyhow!("s3://{bucket}/{key}: {}", e.explain()))?;
    let mut text = Vec::new();
    flate2::read::MultiGzDecoder::new(&body[..])
        .read_to_end(&mut text)
        .map_err(|e| anyhow::anyhow!("s3://{bucket}/{key} is not gzip: {e}"))?;
    text.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|line| {
            serde_json::from_slice(line)
                .map_err(|e| anyhow::anyhow!("s3://{bucket}/{key} holds a line that is not a rejected record: {e}"))
        })
        .collect()
}

/// Which part of the lake to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LakeScope {
    /// Prefixes listed for `events/` and for `errors/` (whole, or hour folders).
    pub events: Vec<String>,
    pub errors: Vec<String>,
    /// `manifests/` has no hour folders: listed only when the whole lake is read.
    pub manifests: bool,
    /// Error files read at most per call; more are read on the next calls.
    pub max_new_error_files: usize,
    /// Where the hour folders start, ms since the epoch; `None` for the whole lake.
    pub since_ms: Option<i64>,
}

impl LakeScope {
    /// Every object (`summary`: a one-shot count, however long the listing takes).
    pub fn whole() -> Self {
        Self {
            events: vec!["events/".into()],
            errors: vec!["errors/".into()],
            manifests: true,
            max_new_error_files: usize::MAX,
            since_ms: None,
        }
    }

    /// The hour folders of the hour holding `now_ms` and of the hour before (batch
    /// files are filed by the arrival hour of their first record): at least the last
    /// hour's arrivals, a few LISTs whatever the lake's size.
    pub fn recent_hours(now_ms: i64, max_new_error_files: usize) -> Self {
        // `hour_prefixes` adds the hour before the range: [now, now + 1) gives two.
        let hours = |kind| event_model::hour_prefixes(kind, now_ms, now_ms + 1);
        Self {
            events: hours(event_model::BatchKind::Events),
            errors: hours(event_model::BatchKind::Errors),
            manifests: false,
            max_new_error_files,
            since_ms: Some((now_ms.div_euclid(HOUR_MS) - 1) * HOUR_MS),
        }
    }
}

const HOUR_MS: i64 = 3_600_000;

/// The lake's part of the summary: objects under its prefixes, rejects by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Lake {
    pub events_objects: Objects,
    pub errors_objects: Objects,
    /// Not read in the hour folders (`manifests/` has none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifests_objects: Option<Objects>,
    pub rejected: BTreeMap<String, u64>,
    /// Error files listed but not read yet (read on the next calls).
    pub errors_files_unread: u64,
    /// Start of the hour folders read; absent for the whole lake.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<i64>,
}

/// Lists the prefixes of `scope` and counts the rejects (error files already in
/// `rejects` are not read again).
pub async fn read_lake(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    scope: &LakeScope,
    rejects: &mut RejectCounts,
) -> anyhow::Result<Lake> {
    let (events_objects, _) = objects(s3, bucket, &scope.events).await?;
    let (errors_objects, error_keys) = objects(s3, bucket, &scope.errors).await?;
    let manifests_objects = match scope.manifests {
        true => Some(objects(s3, bucket, &["manifests/".to_string()]).await?.0),
        false => None,
    };
    let rejected = rejects
        .update(s3, bucket, &error_keys, scope.max_new_error_files)
        .await?;
    Ok(Lake {
        events_objects,
        errors_objects,
        manifests_objects,
        rejected: rejected.by_reason,
        errors_files_unread: rejected.files_unread,
        since_ms: scope.since_ms,
    })
}

/// The warehouse's part: rows, what the loads staged, files, and when the last load was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub rows_loaded: i64,
    pub rows_staged: i64,
    pub files_loaded: i64,
    /// `None` before the first load.
    pub last_load_ms: Option<i64>,
}

/// One query of the warehouse's totals ([`warehouse::query::totals`]).
pub async fn read_totals(warehouse: &Warehouse) -> anyhow::Result<Totals> {
    read_totals_of(warehouse)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the warehouse answered no totals"))
}

/// [`read_totals`] with the warehouse's own error (its kind tells a refused setting
/// from an outage); `None` when it answered no row.
pub async fn read_totals_of(warehouse: &Warehouse) -> Result<Option<Totals>, warehouse::WarehouseError> {
    let totals = warehouse.select(&warehouse::query::totals()).await?;
    Ok(match totals.first().map(Vec::as_slice) {
        Some([rows_loaded, rows_staged, files_loaded, last_load_ms]) => Some(Totals {
            rows_loaded: *rows_loaded,
            rows_staged: *rows_staged,
            files_loaded: *files_loaded,
            last_load_ms: (*files_loaded > 0).then_some(*last_load_ms),
        }),
        _ => None,
    })
}

/// The `top` busiest transitions since `since_ms`, each summed over its time buckets,
/// busiest first.
pub async fn read_top_transitions(
    dynamodb: &aws_sdk_dynamodb::Client,
    table: &str,
    since_ms: i64,
    top: usize,
) -> Result<Vec<Transition>, pipeline_runtime::AwsError> {
    let counts = live_state::transitions::read_since(dynamodb, table, since_ms).await?;
    Ok(busiest(counts, top))
}

fn busiest(counts: Vec<live_state::transitions::TransitionCount>, top: usize) -> Vec<Transition> {
    let mut moves: BTreeMap<(String, String), i64> = BTreeMap::new();
    for t in counts {
        *moves.entry((t.from, t.to)).or_insert(0) += t.count;
    }
    let mut busiest: Vec<Transition> = moves
        .into_iter()
        .map(|((from, to), count)| Transition { from, to, count })
        .collect();
    busiest.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| (&a.from, &a.to).cmp(&(&b.from, &b.to)))
    });
    busiest.truncate(top);
    busiest
}

/// The hour [`Summary::top_transitions`] and the live page look back over.
pub const TRANSITIONS_WINDOW_MS: i64 = 3_600_000;

/// Reads everything the summary shows, once (error files already in `rejects` are not
/// read again).
pub async fn read(
    aws: &pipeline_runtime::AwsClients,
    warehouse: &Warehouse,
    args: &SummaryArgs,
    rejects: &mut RejectCounts,
) -> anyhow::Result<Summary> {
    let lake = read_lake(&aws.s3(), &args.stores.bucket, &LakeScope::whole(), rejects).await?;
    let totals = read_totals(warehouse).await?;
    let dynamodb = aws.dynamodb();
    let levels = live_state::level_state::read_counts(&dynamodb, &args.stores.level_state_table).await?;
    let top_transitions = read_top_transitions(
        &dynamodb,
        &args.stores.transitions_table,
        now_ms() - TRANSITIONS_WINDOW_MS,
        args.top_transitions,
    )
    .await?;
    Ok(Summary {
        events_objects: lake.events_objects,
        errors_objects: lake.errors_objects,
        manifests_objects: lake.manifests_objects.unwrap_or_default(),
        rejected: lake.rejected,
        rows_loaded: totals.rows_loaded,
        files_loaded: totals.files_loaded,
        duplicates_dropped: totals.rows_staged - totals.rows_loaded,
        levels,
        top_transitions,
    })
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &PathBuf, variable: &str) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{variable} {}: {e}", path.display()))?;
    // `generate --json` prints its summary as the last line.
    let line = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default();
    serde_json::from_str(line).map_err(|e| anyhow::anyhow!("{variable} {}: {e}", path.display()))
}

/// Prints the summary; with `--sent`, waits for the pipeline and returns whether the
/// checks hold.
pub async fn run(
    aws: &pipeline_runtime::AwsClients,
    warehouse: &Warehouse,
    args: &SummaryArgs,
) -> anyhow::Result<bool> {
    let sent: Option<Sent> = args.sent.as_ref().map(|p| read_json(p, "SUMMARY_SENT")).transpose()?;
    let baseline: Option<Summary> = args
        .baseline
        .as_ref()
        .map(|p| read_json(p, "SUMMARY_BASELINE"))
        .transpose()?;
    let deadline = Instant::now() + Duration::from_secs(args.wait_secs);
    let mut announced = false;
    let mut rejects = RejectCounts::default();
    let summary = loop {
        let now = read(aws, warehouse, args, &mut rejects).await?;
        let now = match &baseline {
            Some(before) => now.since(before),
            None => now,
        };
        let caught_up = sent.is_none_or(|s| {
            now.rows_loaded >= i64::try_from(s.distinct_valid).unwrap_or(i64::MAX)
                && now.rejected_total() >= s.malformed_records
        });
        if caught_up || Instant::now() >= deadline {
            break now;
        }
        if !announced && !args.json {
            eprintln!(
                "waiting up to {} s for the pipeline to load what was sent",
                args.wait_secs
            );
            announced = true;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let (ok, lines) = match &sent {
        Some(sent) => checks(sent, &summary),
        None => (true, Vec::new()),
    };
    if args.json {
        let mut value = serde_json::to_value(&summary)?;
        if sent.is_some() {
            value["checks_hold"] = ok.into();
        }
        println!("{value}");
    } else {
        for line in &lines {
            println!("{line}");
        }
        print!("{}", summary.to_text());
    }
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(rows: i64, rejects: &[(&str, u64)]) -> Summary {
        Summary {
            rows_loaded: rows,
            rejected: rejects.iter().map(|(r, n)| (r.to_string(), *n)).collect(),
            ..Summary::default()
        }
    }

    #[test]
    fn checks_hold_only_when_both_counts_match() {
        let sent = Sent {
            events: 100,
            duplicates: 5,
            malformed_records: 3,
            distinct_valid: 98,
        };
        assert!(checks(&sent, &held(98, &[("invalid_json", 2), ("missing_field", 1)])).0);
        assert!(!checks(&sent, &held(97, &[("invalid_json", 3)])).0);
        let (ok, lines) = checks(&sent, &held(98, &[("invalid_json", 4)]));
        assert!(!ok);
        assert!(lines[2].ends_with("MISMATCH"), "{}", lines[2]);
    }

    #[test]
    fn a_baseline_leaves_what_was_added() {
        let mut before = held(10, &[("invalid_json", 2)]);
        before.events_objects = Objects { objects: 3, bytes: 300 };
        before.duplicates_dropped = 1;
        let mut now = held(25, &[("invalid_json", 5), ("invalid_utf8", 1)]);
        now.events_objects = Objects { objects: 5, bytes: 700 };
        now.duplicates_dropped = 4;
        let added = now.since(&before);
        assert_eq!(added.rows_loaded, 15);
        assert_eq!(added.events_objects, Objects { objects: 2, bytes: 400 });
        assert_eq!(added.duplicates_dropped, 3);
        assert_eq!(added.rejected_total(), 4);
        assert_eq!(added.rejected.get("invalid_json"), Some(&3));
    }

    #[test]
    fn the_busiest_transitions_are_summed_over_buckets_and_ranked() {
        let count = |bucket_start, from: &str, to: &str, count| live_state::transitions::TransitionCount {
            bucket_start,
            from: from.into(),
            to: to.into(),
            count,
        };
        let top = busiest(
            vec![
                count(0, "a", "b", 2),
                count(60_000, "a", "b", 3),
                count(0, "b", "c", 5),
                count(0, "c", "a", 1),
                count(0, "a", "c", 5),
            ],
            3,
        );
        let ranked: Vec<(&str, &str, i64)> = top.iter().map(|t| (t.from.as_str(), t.to.as_str(), t.count)).collect();
        assert_eq!(ranked, [("a", "b", 5), ("a", "c", 5), ("b", "c", 5)]);
    }

    #[test]
    fn the_live_page_lists_only_this_hour_and_the_last() {
        // 2026-01-01T10:30:00Z
        let now = 1_767_263_400_000;
        let scope = LakeScope::recent_hours(now, 25);
        assert_eq!(scope.events, ["events/2026/01/01/09/", "events/2026/01/01/10/"]);
        assert_eq!(scope.errors, ["errors/2026/01/01/09/", "errors/2026/01/01/10/"]);
        assert_eq!(scope.since_ms, Some(now - 5_400_000), "from 09:00");
        assert!(!scope.manifests);
        let whole = LakeScope::whole();
        assert_eq!(
            (whole.events, whole.errors, whole.manifests),
            (vec!["events/".to_string()], vec!["errors/".to_string()], true)
        );
    }

    #[tokio::test]
    async fn reject_counts_forget_files_out_of_the_window_and_read_a_bounded_number() {
        // No file is read here (max_new 0): the client is never called.
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::Config::builder()
                .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
                .build(),
        );
        let mut rejects = RejectCounts::default();
        for (key, reason, count) in [("errors/h1/a", "invalid_json", 2), ("errors/h2/b", "invalid_json", 3)] {
            rejects
                .by_file
                .insert(key.into(), BTreeMap::from([(reason.to_string(), count)]));
        }
        let keys = ["errors/h2/b".to_string(), "errors/h2/c".to_string()];
        let totals = rejects.update(&s3, "lake", &keys, 0).await.expect("no read");
        assert_eq!(totals.by_reason, BTreeMap::from([("invalid_json".to_string(), 3)]));
        assert_eq!(totals.files_unread, 1, "c is listed, not read yet");
        assert_eq!(rejects.files(), 1, "a left the window and is forgotten");
    }

    #[test]
    fn a_summary_survives_its_own_json() {
        let summary = held(3, &[("invalid_json", 1)]);
        let json = serde_json::to_string(&summary).expect("json");
        assert_eq!(serde_json::from_str::<Summary>(&json).expect("back"), summary);
    }
}
