//! The chaos suite: the whole pipeline under hostile conditions, then the invariants of
//! DESIGN.md.
//!
//! Two generators put a game on the telemetry stream (5% of events sent twice, 5% out
//! of order, 1% malformed, a share KPL-aggregated). Two instances of each service run
//! against the emulators through [`FaultProxy`]s that fail a share of their AWS calls,
//! some after the emulator carried them out. A driver SIGKILLs a random instance every
//! few seconds and starts a new one; the telemetry stream is split and merged mid-run.
//! When the generators are done, the chaos stops and the pipeline is given time to
//! catch up; then warehouse rows must equal the distinct valid events sent, `errors/`
//! must hold every malformed record, LevelState must equal the recount of PlayerState,
//! no count may ever have been negative, and every shard must have been read to its end.
//!
//! `tests/tests/chaos.rs` runs a short chaos in the test command; `deploy/local/chaos`
//! runs the `chaos` binary, as long as asked.

pub mod fleet;
pub mod observer;
pub mod report;
pub mod verdict;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Args, Parser};
use pipeline_runtime::AwsClients;
use pipelinectl::generate::{self, GenerateArgs};

use crate::fault_proxy::FaultProxy;
use crate::resources::Resources;
use crate::stack;
use fleet::Fleet;
use observer::{Observations, Watched};
pub use report::Report;
use verdict::{Checked, Checker, Readers};

/// How hard and how long the chaos is.
#[derive(Debug, Clone, Args)]
pub struct ChaosArgs {
    /// Seconds the generators send for (the chaos lasts as long).
    #[arg(long, env = "CHAOS_SEND_SECS", default_value_t = 600)]
    pub send_secs: u64,

    /// Events per second, both generators together.
    #[arg(long, env = "CHAOS_RATE", default_value_t = 200)]
    pub rate: u64,

    /// Share of the events sent KPL-aggregated (by the second generator, 4 per record).
    #[arg(long, env = "CHAOS_KPL_SHARE", default_value_t = 0.2)]
    pub kpl_share: f64,

    /// Seconds between two SIGKILLs of a random instance.
    #[arg(long, env = "CHAOS_KILL_EVERY_SECS", default_value_t = 3.0)]
    pub kill_every_secs: f64,

    /// Share of the services' AWS calls the proxies fail (0..1).
    #[arg(long, env = "CHAOS_FAULT_RATE", default_value_t = 0.1)]
    pub fault_rate: f64,

    /// Seconds to wait, once the chaos is over, for the pipeline to hold everything.
    #[arg(long, env = "CHAOS_DRAIN_SECS", default_value_t = 240)]
    pub drain_secs: u64,

    /// Seed of the game, the fault draws and the choice of victims.
    #[arg(long, env = "CHAOS_SEED", default_value_t = 1)]
    pub seed: u64,
}

impl ChaosArgs {
    /// The short run of the test command: well under 5 minutes on 2 cores.
    pub fn short() -> Self {
        Self {
            send_secs: 45,
            rate: 150,
            kpl_share: 0.2,
            kill_every_secs: 3.0,
            fault_rate: 0.1,
            drain_secs: 180,
            seed: 1,
        }
    }
}

#[derive(Parser)]
struct GenerateCli {
    #[command(flatten)]
    args: GenerateArgs,
}

/// `pipelinectl generate`'s arguments from its command line (`argv[0]` is `generate`).
pub fn generate_args(argv: &[String]) -> GenerateArgs {
    GenerateCli::try_parse_from(argv).expect("generator arguments").args
}

fn generator_args(stream: &str, args: &ChaosArgs, rate: u64, seed: u64, kpl: usize) -> GenerateArgs {
    let argv = [
        "generate".to_string(),
        format!("--telemetry-stream={stream}"),
        "--count=0".into(),
        format!("--duration-secs={}", args.send_secs),
        format!("--rate={rate}"),
        format!("--seed={seed}"),
        "--players=150".into(),
        "--levels=5".into(),
        "--duplicates=0.05".into(),
        "--out-of-order=0.05".into(),
        "--malformed=0.01".into(),
        format!("--kpl={kpl}"),
    ];
    generate_args(&argv)
}

/// Splits the first open shard of `stream` in two, or merges the two adjacent open
/// shards `split` made with their neighbour; returns what it did.
async fn reshard(aws: &AwsClients, stream: &str, split: bool) -> String {
    let mut open: Vec<_> = stack::list_shards(aws, stream)
        .await
        .into_iter()
        .filter(|s| {
            s.sequence_number_range()
                .is_some_and(|r| r.ending_sequence_number().is_none())
        })
        .filter_map(|s| {
            let range = s.hash_key_range()?;
            let start: u128 = range.starting_hash_key().parse().ok()?;
            let end: u128 = range.ending_hash_key().parse().ok()?;
            Some((start, end, s.shard_id().to_string()))
        })
        .collect();
    open.sort();
    let kinesis = aws.kinesis();
    let done = if split {
        let (start, end, shard) = open.first().cloned().expect("an open shard");
        let middle = start + (end - start) / 2 + 1;
        kinesis
            .split_shard()
            .stream_name(stream)
            .shard_to_split(&shard)
            .new_starting_hash_key(middle.to_string())
            .send()
            .await
            .expect("split shard");
        format!("split {shard}")
    } else {
        let (first, second) = (&open[open.len() - 2].2, &open[open.len() - 1].2);
        kinesis
            .merge_shards()
            .stream_name(stream)
            .shard_to_merge(first)
            .adjacent_shard_to_merge(second)
            .send()
            .await
            .expect("merge shards");
        format!("merged {first} and {second}")
    };
    stack::wait_stream_active(aws, stream).await;
    done
}

/// What the chaos driver thread hands back.
struct Driven {
    fleet: Fleet,
    reshards: Vec<String>,
}

/// Kills a random instance every `kill_every`, and splits then merges the stream at
/// 30% and 60% of `span`, until `stop`.
fn drive(
    mut fleet: Fleet,
    aws: AwsClients,
    stream: String,
    args: ChaosArgs,
    stop: Arc<AtomicBool>,
    runtime: tokio::runtime::Handle,
) -> Driven {
    let mut rng = fastrand::Rng::with_seed(args.seed ^ 0xc4a05);
    let span = Duration::from_secs(args.send_secs);
    let kill_every = Duration::from_secs_f64(args.kill_every_secs.max(0.5));
    let started = Instant::now();
    let mut next_kill = started + kill_every;
    let mut reshards = Vec::new();
    // Victims come in rounds: every instance is killed once, in a random order, before
    // any is killed again, so every service loses instances even in a short run.
    let mut victims: Vec<usize> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        fleet.restart_crashed();
        let elapsed = started.elapsed();
        if reshards.is_empty() && elapsed >= span.mul_f64(0.3) {
            reshards.push(runtime.block_on(reshard(&aws, &stream, true)));
        } else if reshards.len() == 1 && elapsed >= span.mul_f64(0.6) {
            reshards.push(runtime.block_on(reshard(&aws, &stream, false)));
        }
        if Instant::now() >= next_kill {
            if victims.is_empty() {
                victims = (0..fleet.instance_count()).collect();
                rng.shuffle(&mut victims);
            }
            let victim = victims.pop().unwrap_or_default();
            fleet.kill_and_restart(victim, Duration::from_millis(rng.u64(200..1500)));
            next_kill = Instant::now() + kill_every;
        }
    }
    Driven { fleet, reshards }
}

/// Runs the chaos and measures the invariants. The resources it made are deleted.
pub async fn run(args: &ChaosArgs) -> Report {
    let aws = stack::aws().await;
    let resources = Resources::unique();
    resources.create_with(&aws, &["--telemetry-shards=2"]).await;
    let schema = stack::warehouse_schema("chaos").await;
    let kinesis_proxy = FaultProxy::start(&stack::kinesis_endpoint(), args.fault_rate, args.seed)
        .await
        .expect("start the Kinesis fault proxy");
    let moto_proxy = FaultProxy::start(&stack::moto_endpoint(), args.fault_rate, args.seed.wrapping_add(1))
        .await
        .expect("start the moto fault proxy");

    let mut env: Vec<(String, String)> = resources
        .env()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let settings = [
        ("AWS_ENDPOINT_URL", moto_proxy.endpoint()),
        ("AWS_ENDPOINT_URL_KINESIS", kinesis_proxy.endpoint()),
        ("BATCH_MAX_AGE_SECS", "2".into()),
        ("BATCH_MAX_RECORDS", "500".into()),
        ("LOAD_MAX_AGE_SECS", "2".into()),
        ("LOAD_MAX_FILES", "5".into()),
        ("IDLE_BETWEEN_READS_MS", "200".into()),
        ("LEASE_FAILOVER_SECS", "3".into()),
        ("SHARD_SYNC_INTERVAL_SECS", "2".into()),
        ("IDLE_TIMEOUT_SECS", "3600".into()),
        ("METRICS_FLUSH_INTERVAL_SECS", "10".into()),
        ("SHUTDOWN_DEADLINE_SECS", "10".into()),
        // Maintenance runs while loads commit, and both cron instances race for it.
        ("CRON_VACUUM", "*/10 * * * * *".into()),
        ("CRON_ANALYZE", "5/10 * * * * *".into()),
    ];
    env.extend(settings.into_iter().map(|(k, v)| (k.to_string(), v)));
    let logs = std::env::temp_dir().join(format!("chaos-{}", resources.name("TELEMETRY_STREAM")));
    eprintln!("chaos: service logs in {}", logs.display());
    let logs_dir = logs.clone();
    let users = schema.users.clone();
    let fleet = tokio::task::spawn_blocking(move || {
        Fleet::start(
            |service| {
                let mut env = env.clone();
                env.push(("WAREHOUSE_URL".into(), users.url_for(service).to_string()));
                env
            },
            logs,
        )
    })
    .await
    .expect("start the fleet");

    let stream = resources.name("TELEMETRY_STREAM").to_string();
    let stop_observer = Arc::new(AtomicBool::new(false));
    let observed = Arc::new(Mutex::new(Observations::default()));
    let observer = tokio::spawn(observer::observe(
        aws.clone(),
        Watched {
            level_state: resources.name("LEVEL_STATE_TABLE").into(),
            player_state: resources.name("PLAYER_STATE_TABLE").into(),
            lease_tables: [
                "S3_CONNECTOR_LEASE_TABLE",
                "PLAYER_STATE_LEASE_TABLE",
                "REDSHIFT_CONNECTOR_LEASE_TABLE",
            ]
            .iter()
            .map(|v| resources.name(v).to_string())
            .collect(),
        },
        Duration::from_secs(1),
        stop_observer.clone(),
        observed.clone(),
    ));

    let stop_driver = Arc::new(AtomicBool::new(false));
    let driver = {
        let (aws, stream, args, stop) = (aws.clone(), stream.clone(), args.clone(), stop_driver.clone());
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || drive(fleet, aws, stream, args, stop, runtime))
    };

    let kpl_rate = (args.rate as f64 * args.kpl_share).round() as u64;
    let plain = generator_args(&stream, args, args.rate.saturating_sub(kpl_rate), args.seed, 0);
    let kpl = generator_args(&stream, args, kpl_rate.max(1), args.seed.wrapping_add(7), 4);
    let (plain_sent, kpl_sent) = tokio::join!(
        generate::run(Some(aws.kinesis()), &plain),
        generate::run(Some(aws.kinesis()), &kpl),
    );
    let plain_sent = plain_sent.expect("the plain generator sends");
    let kpl_sent = kpl_sent.expect("the KPL generator sends");
    let kpl_events = kpl_sent.events;
    let sent = plain_sent + kpl_sent;

    stop_driver.store(true, Ordering::Relaxed);
    let Driven { mut fleet, reshards } = driver.await.expect("the chaos driver");

    // The chaos is over (the proxies still fail calls): wait for the pipeline.
    let drained = Instant::now();
    let mut checker = Checker::new(
        aws.clone(),
        stack::connect_warehouse(&schema.url).await,
        Checked {
            bucket: resources.name("BUCKET").into(),
            level_state: resources.name("LEVEL_STATE_TABLE").into(),
            player_state: resources.name("PLAYER_STATE_TABLE").into(),
            readers: vec![
                Readers {
                    stream: stream.clone(),
                    lease_tables: vec![
                        resources.name("S3_CONNECTOR_LEASE_TABLE").into(),
                        resources.name("PLAYER_STATE_LEASE_TABLE").into(),
                    ],
                },
                Readers {
                    stream: resources.name("FILES_STREAM").into(),
                    lease_tables: vec![resources.name("REDSHIFT_CONNECTOR_LEASE_TABLE").into()],
                },
            ],
        },
    );
    let deadline = drained + Duration::from_secs(args.drain_secs);
    let mut next_progress = Duration::from_secs(15);
    let verdict = loop {
        tokio::time::sleep(Duration::from_secs(3)).await;
        fleet = tokio::task::spawn_blocking(move || {
            fleet.restart_crashed();
            fleet
        })
        .await
        .expect("restart crashed instances");
        // The SHARD_END sightings so far: a parent's lease is deleted once its children have theirs.
        let seen = observed.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        match checker.measure(&seen).await {
            Ok(verdict) if verdict.holds(&sent) || Instant::now() >= deadline => break verdict,
            Ok(verdict) => {
                if drained.elapsed() >= next_progress {
                    eprintln!(
                        "chaos: {:.0} s after the chaos, still waiting: {}",
                        drained.elapsed().as_secs_f64(),
                        verdict.problems(&sent).join("; ")
                    );
                    next_progress += Duration::from_secs(15);
                }
            }
            Err(error) if Instant::now() >= deadline => panic!("measuring the invariants: {error}"),
            Err(_) => {}
        }
    };
    let catch_up = drained.elapsed();

    stop_observer.store(true, Ordering::Relaxed);
    let seen = observer.await.expect("the observer");
    let crashes = fleet.crashes.clone();
    let kills = fleet.kills.clone();
    let unclean_stops = tokio::task::spawn_blocking(move || fleet.stop(Duration::from_secs(30)))
        .await
        .expect("stop the fleet");

    let report = Report {
        args: args.clone(),
        sent,
        kpl_events,
        kills,
        reshards,
        faults: kinesis_proxy.counts.tally() + moto_proxy.counts.tally(),
        verdict,
        seen,
        crashes,
        unclean_stops,
        catch_up,
    };
    resources.delete(&aws).await;
    schema.drop_all().await;
    // The services' logs are for finding out why a run failed; a clean run leaves none.
    if report.problems().is_empty() {
        let _ = std::fs::remove_dir_all(&logs_dir);
    }
    report
}
