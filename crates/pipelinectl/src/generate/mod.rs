//! `pipelinectl generate`: telemetry onto the `telemetry` stream, random or replayed,
//! as telemetry JSON or Snowplow enriched TSV, at a rate, with optional KPL
//! aggregation and injected duplicates, out-of-order and malformed records.

pub mod producer;
pub mod workload;

use pipeline_runtime::clock::now_ms;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Args, ValueEnum};
use pipeline_runtime::config::parse_resource_name;

use producer::{Producer, Record, Sent, Sink};
use workload::Simulator;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// The pipeline's telemetry JSON.
    Json,
    /// Snowplow enriched events (for the player-state path).
    Snowplow,
}

fn ratio(value: &str) -> Result<f64, String> {
    let r: f64 = value.parse().map_err(|_| format!("{value:?} is not a number"))?;
    if (0.0..=1.0).contains(&r) {
        Ok(r)
    } else {
        Err("must be between 0 and 1".into())
    }
}

/// What `generate` sends.
#[derive(Debug, Clone, Args)]
pub struct GenerateArgs {
    /// Kinesis stream to put events on.
    #[arg(long, env = "TELEMETRY_STREAM", default_value = "telemetry", value_parser = parse_resource_name)]
    pub telemetry_stream: String,

    /// Players in the random game.
    #[arg(long, env = "GENERATE_PLAYERS", default_value_t = 200)]
    pub players: usize,

    /// Levels in the random game.
    #[arg(long, env = "GENERATE_LEVELS", default_value_t = 8)]
    pub levels: usize,

    /// Events to send (0: until --duration-secs, or Ctrl-C).
    #[arg(long, env = "GENERATE_COUNT", default_value_t = 1000)]
    pub count: u64,

    /// Seconds to send for (0: until --count).
    #[arg(long, env = "GENERATE_DURATION_SECS", default_value_t = 0)]
    pub duration_secs: u64,

    /// Events per second.
    #[arg(long, env = "GENERATE_RATE", default_value_t = 500,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub rate: u64,

    /// Seed of the random game (the same seed sends the same game).
    #[arg(long, env = "GENERATE_SEED", default_value_t = 1)]
    pub seed: u64,

    /// Record format: `json` or `snowplow`.
    #[arg(long, env = "GENERATE_FORMAT", value_enum, default_value = "json")]
    pub format: Format,

    /// Replay a JSON-lines file of events instead, timestamps moved to now.
    #[arg(long, env = "GENERATE_REPLAY")]
    pub replay: Option<PathBuf>,

    /// KPL-aggregate this many events per Kinesis record (0 or 1: no aggregation).
    #[arg(long, env = "GENERATE_KPL", default_value_t = 0)]
    pub kpl: usize,

    /// Share of events sent twice (0..1).
    #[arg(long, env = "GENERATE_DUPLICATES", default_value_t = 0.0, value_parser = ratio)]
    pub duplicates: f64,

    /// Share of events held back and sent after later ones (0..1).
    #[arg(long, env = "GENERATE_OUT_OF_ORDER", default_value_t = 0.0, value_parser = ratio)]
    pub out_of_order: f64,

    /// Share of records replaced by malformed ones (0..1).
    #[arg(long, env = "GENERATE_MALFORMED", default_value_t = 0.0, value_parser = ratio)]
    pub malformed: f64,

    /// Write the records to this file, one per line, instead of the stream; event
    /// times then start at 2026-01-01T00:00:00Z and advance by 1/rate s per event, so
    /// a seed always writes the same bytes.
    #[arg(long, env = "GENERATE_OUTPUT_FILE")]
    pub output_file: Option<PathBuf>,

    /// Print the summary as one JSON object on standard output.
    #[arg(long, env = "GENERATE_JSON", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub json: bool,
}

/// Where the clock of a file's events starts (2026-01-01T00:00:00Z).
pub const FILE_EPOCH_MS: i64 = 1_767_225_600_000;

/// What was sent.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Distinct events, malformed ones included (duplicates are not counted again).
    pub events: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    /// Events replaced by malformed records.
    pub malformed: u64,
    /// Malformed records sent, their duplicates included: what the pipeline must reject.
    pub malformed_records: u64,
    pub records_put: u64,
    pub retried_entries: u64,
}

/// What several generators sent together (they draw distinct event ids).
impl std::ops::Add for Summary {
    type Output = Summary;

    fn add(self, other: Summary) -> Summary {
        Summary {
            events: self.events + other.events,
            duplicates: self.duplicates + other.duplicates,
            out_of_order: self.out_of_order + other.out_of_order,
            malformed: self.malformed + other.malformed,
            malformed_records: self.malformed_records + other.malformed_records,
            records_put: self.records_put + other.records_put,
            retried_entries: self.retried_entries + other.retried_entries,
        }
    }
}

impl Summary {
    /// Valid events with distinct ids: what the warehouse must end up holding.
    pub fn distinct_valid(&self) -> u64 {
        self.events - self.malformed
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "events": self.events,
            "duplicates": self.duplicates,
            "out_of_order": self.out_of_order,
            "malformed": self.malformed,
            "malformed_records": self.malformed_records,
            "distinct_valid": self.distinct_valid(),
            "records_put": self.records_put,
            "retried_entries": self.retried_entries,
        })
    }
}

/// Malformed records of several kinds, so each rejection reason shows up.
fn malformed(rng: &mut fastrand::Rng) -> Vec<u8> {
    match rng.u8(..4) {
        0 => b"{\"event_id\": \"truncated".to_vec(),
        1 => vec![b'{', 0xff, 0xfe, b'}'],
        2 => br#"{"event_id":"not-a-uuid","client_id":"x","app_name":"SampleGame","event_version":"1","event_type":"t","event_timestamp":1}"#.to_vec(),
        _ => br#"{"app_name":"SampleGame"}"#.to_vec(),
    }
}

/// Moves a replayed event's time so the first one happens now.
fn rebase(line: &[u8], shift_ms: &mut Option<i64>, now: i64) -> Option<Vec<u8>> {
    let mut value: serde_json::Value = serde_json::from_slice(line).ok()?;
    let ts = value.get("event_timestamp").and_then(serde_json::Value::as_i64)?;
    let shift = *shift_ms.get_or_insert(now - ts);
    value["event_timestamp"] = (ts + shift).into();
    Some(value.to_string().into_bytes())
}

/// Sends events as the arguments say, printing progress on a terminal.
pub async fn run(kinesis: Option<aws_sdk_kinesis::Client>, args: &GenerateArgs) -> anyhow::Result<Summary> {
    // Bytes, not text: a replayed file may hold malformed records on purpose.
    let replay: Option<Vec<Vec<u8>>> = match &args.replay {
        Some(path) => Some(
            std::fs::read(path)
                .map_err(|e| anyhow::anyhow!("GENERATE_REPLAY {}: {e}", path.display()))?
                .split(|b| *b == b'\n')
                .filter(|l| !l.trim_ascii().is_empty())
                .map(<[u8]>::to_vec)
                .collect(),
        ),
        None => None,
    };
    let mut sink = match &args.output_file {
        Some(_) if args.kpl > 1 => anyhow::bail!("GENERATE_KPL aggregates Kinesis records; a file holds events"),
        Some(path) => {
            Sink::File(std::io::BufWriter::new(std::fs::File::create(path).map_err(|e| {
                anyhow::anyhow!("GENERATE_OUTPUT_FILE {}: {e}", path.display())
            })?))
        }
        None => match kinesis {
            Some(kinesis) => Sink::Stream(Producer::aggregating(kinesis, &args.telemetry_stream, args.kpl)),
            None => anyhow::bail!("no Kinesis client and no GENERATE_OUTPUT_FILE"),
        },
    };
    let to_file = args.output_file.is_some();
    let total = match (&replay, args.count) {
        (Some(lines), 0) => lines.len() as u64,
        (Some(lines), n) => n.min(lines.len() as u64),
        (None, n) => n,
    };
    let deadline = (args.duration_secs > 0).then(|| Instant::now() + Duration::from_secs(args.duration_secs));
    let progress = crate::progress::bar(true, total, "{bar:40} {pos}/{len} events, {per_sec}, {msg}");
    let mut simulator = Simulator::new(args.seed, args.players, args.levels);
    let mut rng = fastrand::Rng::with_seed(args.seed ^ 0x5eed);
    let mut held: VecDeque<(Record, u32)> = VecDeque::new();
    let mut summary = Summary::default();
    let mut shift = None;
    let started = Instant::now();
    let tick = Duration::from_millis(100);
    let per_tick = (args.rate / 10).max(1);
    let mut interval = tokio::time::interval(tick);
    // Ctrl-C stops sending; what is queued still goes out.
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = interrupted.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            flag.store(true, Ordering::Relaxed);
        }
    });
    'send: loop {
        if !to_file {
            interval.tick().await;
        }
        for _ in 0..per_tick {
            let done_by_count = total > 0 && summary.events >= total;
            let done_by_time = deadline.is_some_and(|d| Instant::now() >= d);
            if done_by_count || done_by_time || interrupted.load(Ordering::Relaxed) {
                break 'send;
            }
            let now = if to_file {
                FILE_EPOCH_MS + (summary.events * 1000 / args.rate) as i64
            } else {
                now_ms()
            };
            let (key, data) = match &replay {
                Some(lines) => {
                    let line = &lines[summary.events as usize % lines.len()];
                    let data = rebase(line, &mut shift, now).unwrap_or_else(|| line.clone());
                    (format!("replay-{}", summary.events % 64), data)
                }
                None => {
                    let event = simulator.next_event(now);
                    let data = match args.format {
                        Format::Json => event.to_json(),
                        Format::Snowplow => event.to_snowplow(),
                    };
                    (event.client_id, data)
                }
            };
            summary.events += 1;
            let is_malformed = rng.f64() < args.malformed;
            let data = if is_malformed {
                summary.malformed += 1;
                summary.malformed_records += 1;
                malformed(&mut rng)
            } else {
                data
            };
            let record = Record::plain(key, Bytes::from(data));
            if rng.f64() < args.duplicates {
                summary.duplicates += 1;
                summary.malformed_records += u64::from(is_malformed);
                held.push_back((record.clone(), rng.u32(0..50)));
            }
            if rng.f64() < args.out_of_order {
                summary.out_of_order += 1;
                held.push_back((record, rng.u32(1..20)));
            } else {
                emit(&mut sink, record, &mut summary).await?;
            }
            // Held records go out after the number of events they wait for.
            let mut waiting = VecDeque::new();
            while let Some((record, wait)) = held.pop_front() {
                if wait == 0 {
                    emit(&mut sink, record, &mut summary).await?;
                } else {
                    waiting.push_back((record, wait - 1));
                }
            }
            held = waiting;
        }
        progress.set_position(summary.events);
        progress.set_message(format!(
            "{} records put, {} retried",
            summary.records_put, summary.retried_entries
        ));
    }
    for (record, _) in held.drain(..) {
        emit(&mut sink, record, &mut summary).await?;
    }
    let sent = sink.flush().await?;
    count(&mut summary, sent);
    progress.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    let destination = match &args.output_file {
        Some(path) => path.display().to_string(),
        None => args.telemetry_stream.clone(),
    };
    eprintln!(
        "sent {} events ({} duplicated, {} out of order, {} malformed) in {} records to {destination} in {elapsed:.1} s ({:.0} events/s); {} entries retried after partial failures",
        summary.events,
        summary.duplicates,
        summary.out_of_order,
        summary.malformed,
        summary.records_put,
        summary.events as f64 / elapsed.max(0.001),
        summary.retried_entries
    );
    if args.json {
        println!("{}", summary.to_json());
    }
    Ok(summary)
}

/// One event's record to the sink (the producer aggregates when asked to).
async fn emit(sink: &mut Sink, record: Record, summary: &mut Summary) -> anyhow::Result<()> {
    let sent = sink.push(record).await?;
    count(summary, sent);
    Ok(())
}

fn count(summary: &mut Summary, sent: Sent) {
    summary.records_put += sent.records;
    summary.retried_entries += sent.retried;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replayed_timestamps_move_to_now_keeping_their_spacing() {
        let mut shift = None;
        let first = rebase(br#"{"event_timestamp":1000,"a":1}"#, &mut shift, 50_000).expect("json");
        let second = rebase(br#"{"event_timestamp":1500}"#, &mut shift, 99_999).expect("json");
        let ts = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).expect("json")["event_timestamp"].as_i64();
        assert_eq!(ts(&first), Some(50_000));
        assert_eq!(ts(&second), Some(50_500));
        assert!(rebase(b"not json", &mut shift, 0).is_none());
    }

    #[test]
    fn ratios_are_checked() {
        assert_eq!(ratio("0.05"), Ok(0.05));
        assert!(ratio("1.5").is_err());
        assert!(ratio("x").is_err());
    }
}
