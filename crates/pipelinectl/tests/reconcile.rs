//! `reconcile-levels` on the local stack:
//! - `--check`: silent and exit 0 while LevelState is the recount of PlayerState; the
//!   drifted levels, signed, and exit 1 once it is not;
//! - a correction while a game runs and the player-state-worker works: exactly the skew
//!   is found and corrected, and once the game ends LevelState is the recount (a double
//!   count would never settle there);
//! - a correct LevelState is not written at all; a dry run writes nothing;
//! - a correction that cannot finish fails by its deadline, naming it, or at SIGTERM
//!   during the pause, writes nothing, and hands the leases back either way.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use live_state::{level_state, player_state};
use pipeline_runtime::AwsClients;
use pipeline_tests::process::{ServiceProcess, run_command, workspace_binary};
use pipeline_tests::resources::Resources;
use pipeline_tests::stack;
use pipeline_tests::wait::eventually;

const BIN: &str = env!("CARGO_BIN_EXE_pipelinectl");

/// Short waits for the local stack: the worker below fails over in 3 s, so renewing
/// every 500 ms keeps the paused leases.
const FAST: &[(&str, &str)] = &[
    ("RECONCILE_RENEW_INTERVAL_MS", "500"),
    ("RECONCILE_POLL_INTERVAL_MS", "200"),
    ("RECONCILE_STREAM_LAG_MS", "300"),
];

fn reconcile(env: &[(&str, &str)], args: &[&str]) -> (Option<i32>, String) {
    let args: Vec<&str> = ["reconcile-levels", "--reconcile-reads=2", "--reconcile-interval-secs=0"]
        .into_iter()
        .chain(args.iter().copied())
        .collect();
    let env: Vec<(&str, &str)> = FAST.iter().chain(env).copied().collect();
    run_command(BIN, &env, &args)
}

async fn put(aws: &AwsClients, table: &str, item: &[(&str, AttributeValue)]) {
    aws.dynamodb()
        .put_item()
        .table_name(table)
        .set_item(Some(item.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()))
        .send()
        .await
        .expect("put item");
}

async fn set_count(aws: &AwsClients, table: &str, level: &str, count: i64) {
    put(
        aws,
        table,
        &[
            (level_state::LEVEL_ID, AttributeValue::S(level.into())),
            (level_state::PLAYER_COUNT, AttributeValue::N(count.to_string())),
        ],
    )
    .await;
}

/// Adds `delta` to a level's count, as a lost or doubled stream record would have.
async fn skew(aws: &AwsClients, table: &str, level: &str, delta: i64) {
    aws.dynamodb()
        .update_item()
        .table_name(table)
        .key(level_state::LEVEL_ID, AttributeValue::S(level.into()))
        .update_expression("ADD #count :delta")
        .expression_attribute_names("#count", level_state::PLAYER_COUNT)
        .expression_attribute_values(":delta", AttributeValue::N(delta.to_string()))
        .send()
        .await
        .expect("skew a count");
}

/// Every LevelState item as (level, every attribute but the key), for "untouched".
async fn level_items(aws: &AwsClients, table: &str) -> BTreeMap<String, Vec<(String, String)>> {
    stack::scan_table(aws, table)
        .await
        .expect("scan LevelState")
        .iter()
        .map(|item| {
            let mut attributes: Vec<(String, String)> =
                item.iter().map(|(k, v)| (k.clone(), format!("{v:?}"))).collect();
            attributes.sort();
            (stack::item_text(item, level_state::LEVEL_ID), attributes)
        })
        .collect()
}

/// Nonzero LevelState counts and the recount of PlayerState, read now.
async fn counts(aws: &AwsClients, resources: &Resources) -> (BTreeMap<String, i64>, BTreeMap<String, i64>) {
    let levels = level_state::read_counts(&aws.dynamodb(), resources.name("LEVEL_STATE_TABLE"))
        .await
        .expect("LevelState")
        .into_iter()
        .map(|l| (l.level_id, l.player_count))
        .collect();
    let recount = player_state::count_by_level(&aws.dynamodb(), resources.name("PLAYER_STATE_TABLE"))
        .await
        .expect("PlayerState");
    (levels, recount)
}

/// The rows of a drift table (`level LevelState PlayerState drift`), up to the blank line.
fn drift_rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .skip_while(|l| !l.starts_with("level "))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

/// Owners of the leases of `table` that are this command's.
async fn reconcile_owners(aws: &AwsClients, table: &str) -> Vec<String> {
    stack::scan_table(aws, table)
        .await
        .expect("scan a lease table")
        .iter()
        .map(|item| stack::item_text(item, "leaseOwner"))
        .filter(|owner| owner.starts_with("reconcile-levels"))
        .collect()
}

fn start_worker(resources: &Resources, extra: &[(&str, &str)]) -> ServiceProcess {
    let mut env = resources.env();
    env.extend_from_slice(&[
        ("WORKER_ID", "reconcile-test-worker"),
        ("LEASE_FAILOVER_SECS", "3"),
        ("IDLE_BETWEEN_READS_MS", "200"),
        ("IDLE_TIMEOUT_SECS", "600"),
        ("PRUNE_INTERVAL_SECS", "1"),
    ]);
    env.extend_from_slice(extra);
    ServiceProcess::start(&workspace_binary("player-state-worker"), &env)
}

#[tokio::test]
async fn reconcile_check_reports_drift_only_where_levelstate_is_not_the_recount() {
    let aws = stack::aws().await;
    let resources = Resources::unique();
    resources.create(&aws).await;
    let (players, levels) = (
        resources.name("PLAYER_STATE_TABLE"),
        resources.name("LEVEL_STATE_TABLE"),
    );
    for (player, level) in [
        ("p1", "level-a"),
        ("p2", "level-a"),
        ("p3", "level-a"),
        ("p4", "level-b"),
    ] {
        put(
            &aws,
            players,
            &[
                (player_state::PLAYER_ID, AttributeValue::S(player.into())),
                (player_state::LEVEL_ID, AttributeValue::S(level.into())),
                (player_state::LAST_UPDATED, AttributeValue::N("1".into())),
            ],
        )
        .await;
    }
    set_count(&aws, levels, "level-a", 3).await;
    set_count(&aws, levels, "level-b", 1).await;
    let env = resources.env();

    let (code, text) = reconcile(&env, &["--check"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("equals the recount"), "{text}");

    // A lost decrement (as after a gap in the stream) and a level nobody is on any more.
    set_count(&aws, levels, "level-b", 4).await;
    set_count(&aws, levels, "level-c", 2).await;
    let (code, text) = reconcile(&env, &["--check"]);
    assert_eq!(code, Some(1), "{text}");
    let rows: Vec<Vec<&str>> = text.lines().skip(1).map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(
        rows,
        [vec!["level-b", "4", "1", "+3"], vec!["level-c", "2", "0", "+2"]],
        "{text}"
    );

    // No level stage runs: the changes in PlayerState's stream are never applied, so a
    // correction can never be exact. It gives up at its deadline, naming it, writes
    // nothing and hands back the pruner's lease it took.
    let before = level_items(&aws, levels).await;
    let mut env = env.clone();
    env.push(("RECONCILE_TIMEOUT_SECS", "3"));
    let (code, text) = reconcile(&env, &[]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("RECONCILE_TIMEOUT_SECS=3"), "{text}");
    assert!(text.contains("level stage to apply"), "{text}");
    assert_eq!(level_items(&aws, levels).await, before, "nothing written");
    assert!(
        reconcile_owners(&aws, resources.name("PRUNER_LEASE_TABLE"))
            .await
            .is_empty(),
        "the pruner's lease was released"
    );
    resources.delete(&aws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_corrects_exactly_the_skew_while_a_game_runs() {
    let aws = stack::aws().await;
    let resources = Resources::unique();
    resources.create(&aws).await;
    let levels_table = resources.name("LEVEL_STATE_TABLE");
    let mut worker = start_worker(&resources, &[]);
    let env = resources.env();

    // A game of 40 players over 6 levels for about 40 s, beside the test.
    let game = {
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        std::thread::spawn(move || {
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            run_command(
                BIN,
                &env,
                &[
                    "generate",
                    "--players=40",
                    "--levels=6",
                    "--count=0",
                    "--duration-secs=40",
                    "--rate=40",
                    "--seed=19",
                ],
            )
        })
    };
    assert!(
        eventually(Duration::from_secs(60), || async {
            counts(&aws, &resources).await.0.len() >= 2
        })
        .await,
        "the level stage counts players"
    );
    // Two lost records' worth of drift: three increments too many on a level with
    // players, two on a level nobody is on.
    let (levels, _) = counts(&aws, &resources).await;
    let busy = levels.keys().next().cloned().expect("a level with players");
    skew(&aws, levels_table, &busy, 3).await;
    skew(&aws, levels_table, "level-ghost", 2).await;

    let started = std::time::Instant::now();
    let mut fix_env = env.clone();
    fix_env.push(("RECONCILE_TIMEOUT_SECS", "90"));
    let (code, text) = reconcile(&fix_env, &[]);
    let took = started.elapsed();
    assert_eq!(code, Some(0), "{text}");
    let drift: BTreeMap<String, String> = drift_rows(&text)
        .into_iter()
        .map(|row| (row[0].clone(), row[3].clone()))
        .collect();
    assert_eq!(
        drift,
        BTreeMap::from([
            (busy.clone(), "+3".to_string()),
            ("level-ghost".to_string(), "+2".to_string())
        ]),
        "{text}"
    );
    assert!(text.contains("corrected 2 levels, 5 players miscounted"), "{text}");
    eprintln!(
        "reconcile-levels took {} ms while the game ran:\n{text}",
        took.as_millis()
    );
    for table in ["PLAYER_STATE_LEASE_TABLE", "PRUNER_LEASE_TABLE"] {
        assert!(
            reconcile_owners(&aws, resources.name(table)).await.is_empty(),
            "{table}: every lease handed back"
        );
    }

    // The game ends; the worker takes its leases back and reads the events kept in
    // Kinesis meanwhile. A correction counted twice would never settle to the recount.
    let (code, text) = game.join().expect("the game");
    assert_eq!(code, Some(0), "{text}");
    assert!(
        eventually(Duration::from_secs(60), || async {
            let (levels, recount) = counts(&aws, &resources).await;
            levels == recount && !levels.is_empty()
        })
        .await,
        "LevelState settles to the recount: {:?}",
        counts(&aws, &resources).await
    );
    let (code, text) = reconcile(&env, &["--check"]);
    assert_eq!(code, Some(0), "{text}");
    worker.terminate();
    assert!(worker.wait_exit(Duration::from_secs(30)).is_some());
    resources.delete(&aws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_leaves_a_correct_levelstate_untouched_and_a_dry_run_writes_nothing() {
    let aws = stack::aws().await;
    let resources = Resources::unique();
    resources.create(&aws).await;
    let (players, levels_table) = (
        resources.name("PLAYER_STATE_TABLE"),
        resources.name("LEVEL_STATE_TABLE"),
    );
    // Only the level stage: PlayerState is written here, and LevelState follows it.
    let mut worker = start_worker(&resources, &[("STAGES", "levels")]);
    for (player, level) in [("p1", "level-a"), ("p2", "level-a"), ("p3", "level-b")] {
        put(
            &aws,
            players,
            &[
                (player_state::PLAYER_ID, AttributeValue::S(player.into())),
                (player_state::LEVEL_ID, AttributeValue::S(level.into())),
                (
                    player_state::LAST_UPDATED,
                    AttributeValue::N(pipeline_runtime::clock::now_ms().to_string()),
                ),
            ],
        )
        .await;
    }
    let expected = BTreeMap::from([("level-a".to_string(), 2), ("level-b".to_string(), 1)]);
    assert!(
        eventually(Duration::from_secs(60), || async {
            counts(&aws, &resources).await.0 == expected
        })
        .await,
        "the level stage counts the players"
    );
    // A version mark on every item: any write would have to keep it to go unseen.
    for level in expected.keys() {
        aws.dynamodb()
            .update_item()
            .table_name(levels_table)
            .key(level_state::LEVEL_ID, AttributeValue::S(level.clone()))
            .update_expression("SET #version = :version")
            .expression_attribute_names("#version", "version")
            .expression_attribute_values(":version", AttributeValue::N("7".into()))
            .send()
            .await
            .expect("mark the item");
    }
    let before = level_items(&aws, levels_table).await;
    let env = resources.env();
    let (code, text) = reconcile(&env, &[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("nothing to correct: 0 levels"), "{text}");
    assert_eq!(level_items(&aws, levels_table).await, before, "no item written");

    skew(&aws, levels_table, "level-b", -1).await;
    let skewed = level_items(&aws, levels_table).await;
    let (code, text) = reconcile(&env, &["--dry-run"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("would set level-b playerCount 0 -> 1 (+1)"), "{text}");
    assert!(
        text.contains("dry run, nothing written: 1 levels, 1 players miscounted"),
        "{text}"
    );
    assert_eq!(
        level_items(&aws, levels_table).await,
        skewed,
        "a dry run writes nothing"
    );
    worker.terminate();
    assert!(worker.wait_exit(Duration::from_secs(30)).is_some());
    resources.delete(&aws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_corrects_exactly_while_a_writer_it_cannot_pause_keeps_changing_playerstate() {
    let aws = stack::aws().await;
    let resources = Resources::unique();
    resources.create(&aws).await;
    let (players, levels_table) = (
        resources.name("PLAYER_STATE_TABLE"),
        resources.name("LEVEL_STATE_TABLE"),
    );
    let mut worker = start_worker(&resources, &[("STAGES", "levels")]);
    let move_player = |player: String, level: String| {
        let aws = aws.clone();
        let players = players.to_string();
        async move {
            put(
                &aws,
                &players,
                &[
                    (player_state::PLAYER_ID, AttributeValue::S(player)),
                    (player_state::LEVEL_ID, AttributeValue::S(level)),
                    (
                        player_state::LAST_UPDATED,
                        AttributeValue::N(pipeline_runtime::clock::now_ms().to_string()),
                    ),
                ],
            )
            .await;
        }
    };
    for i in 0..6 {
        move_player(format!("p{i}"), format!("level-{}", i % 3)).await;
    }
    assert!(
        eventually(Duration::from_secs(60), || async {
            let (levels, recount) = counts(&aws, &resources).await;
            levels == recount && !levels.is_empty()
        })
        .await,
        "the level stage counts the players"
    );
    skew(&aws, levels_table, "level-1", 4).await;

    // A writer no lease pauses (as an operator's script would be) moves players until
    // the correction has run a while.
    let fix = {
        let env: Vec<(String, String)> = resources
            .env()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .chain([
                ("RECONCILE_TIMEOUT_SECS".to_string(), "60".to_string()),
                ("LOG_LEVEL".to_string(), "info".to_string()),
            ])
            .collect();
        std::thread::spawn(move || {
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            reconcile(&env, &[])
        })
    };
    let pruner_table = resources.name("PRUNER_LEASE_TABLE");
    let mut moves = 0;
    let mut paused_moves = 0;
    while !fix.is_finished() && paused_moves < 40 {
        move_player(format!("p{}", moves % 6), format!("level-{}", moves % 4)).await;
        moves += 1;
        if !reconcile_owners(&aws, pruner_table).await.is_empty() {
            paused_moves += 1;
        }
    }
    let (code, text) = fix.join().expect("reconcile-levels");
    eprintln!("{moves} moves, {paused_moves} during the pause:\n{text}");
    assert_eq!(code, Some(0), "{text}");
    assert!(paused_moves > 0, "the writer kept writing while the pause held: {text}");
    assert!(text.contains("level-1") && text.contains("+4"), "{text}");
    assert!(
        eventually(Duration::from_secs(60), || async {
            let (levels, recount) = counts(&aws, &resources).await;
            levels == recount
        })
        .await,
        "LevelState settles to the recount: {:?}",
        counts(&aws, &resources).await
    );
    worker.terminate();
    assert!(worker.wait_exit(Duration::from_secs(30)).is_some());
    resources.delete(&aws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_interrupted_by_sigterm_during_the_pause_releases_the_leases_and_writes_nothing() {
    let aws = stack::aws().await;
    let resources = Resources::unique();
    resources.create(&aws).await;
    let (players, levels) = (
        resources.name("PLAYER_STATE_TABLE"),
        resources.name("LEVEL_STATE_TABLE"),
    );
    put(
        &aws,
        players,
        &[
            (player_state::PLAYER_ID, AttributeValue::S("p1".into())),
            (player_state::LEVEL_ID, AttributeValue::S("level-a".into())),
            (player_state::LAST_UPDATED, AttributeValue::N("1".into())),
        ],
    )
    .await;
    set_count(&aws, levels, "level-a", 4).await;
    // An events-stage shard lease for the pause to take (no worker runs).
    let events = shard_consumer::LeaseTable::new(aws.dynamodb(), resources.name("PLAYER_STATE_LEASE_TABLE"));
    events
        .create(&shard_consumer::lease::Lease::new(
            "shardId-000000000000",
            shard_consumer::Checkpoint::TrimHorizon,
            Vec::new(),
        ))
        .await
        .expect("an events-stage lease");
    let before = level_items(&aws, levels).await;

    // No level stage runs: the correction waits in its pause until the signal.
    let env: Vec<(&str, &str)> = FAST
        .iter()
        .copied()
        .chain(resources.env())
        .chain([("RECONCILE_TIMEOUT_SECS", "120")])
        .collect();
    let child = std::process::Command::new(BIN)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(stack::service_env())
        .envs(env.iter().copied())
        .arg("reconcile-levels")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start reconcile-levels");
    let paused = eventually(Duration::from_secs(30), || async {
        reconcile_owners(&aws, resources.name("PLAYER_STATE_LEASE_TABLE"))
            .await
            .len()
            == 1
            && reconcile_owners(&aws, resources.name("PRUNER_LEASE_TABLE")).await.len() == 1
    })
    .await;
    let status = std::process::Command::new("kill")
        .args(["-s", "TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let started = std::time::Instant::now();
    let output = child.wait_with_output().expect("reconcile-levels exits");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(paused, "the pause took both leases: {text}");
    assert!(started.elapsed() < Duration::from_secs(20), "it stops at once: {text}");
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("interrupted (SIGTERM or Ctrl-C)"), "{text}");
    for table in ["PLAYER_STATE_LEASE_TABLE", "PRUNER_LEASE_TABLE"] {
        assert!(
            reconcile_owners(&aws, resources.name(table)).await.is_empty(),
            "{table}: the lease was released"
        );
    }
    assert_eq!(level_items(&aws, levels).await, before, "nothing written");
    resources.delete(&aws).await;
}
