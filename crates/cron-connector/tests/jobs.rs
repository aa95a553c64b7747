//! Two cron-connectors on the local stack: only the lease holder runs jobs; a job that
//! fails in a way that may pass is reported and retried at its next time without
//! stopping the process; a graceful stop hands the jobs to the other instance; a job
//! that can never run (its table is gone) stops the service with the reason; the
//! level-drift check publishes the players LevelState miscounts, and 0 once it does not;
//! a level-drift check that can never run (its table is missing) is counted and logged
//! as a failed run while the warehouse jobs go on.

use std::time::Duration;

use pipeline_tests::process::ServiceProcess;
use pipeline_tests::resources::Resources;
use pipeline_tests::stack;

const BIN: &str = env!("CARGO_BIN_EXE_cron-connector");

/// Log lines of the analyze job that start with `message`.
fn count(service: &mut ServiceProcess, message: &str) -> usize {
    service
        .json_lines()
        .iter()
        .filter(|l| l["message"].as_str().is_some_and(|m| m.starts_with(message)) && l["job"] == "analyze")
        .count()
}

async fn wait_until(mut check: impl FnMut() -> bool, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    check()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_runs_the_jobs_passing_failures_are_retried_a_stop_hands_over_a_fatal_one_stops() {
    let aws = stack::aws().await;
    let resources = Resources::unique();
    resources.create(&aws).await;
    let warehouse = stack::warehouse_schema("cron").await;
    let (schema, url, sql) = (&warehouse.name, &warehouse.users.maintenance, &warehouse.sql);

    // A job waits at most half a second for a lock: a held lock fails it the way a
    // passing failure does (SQLSTATE 55P03). (The URL's options already set the
    // search_path; options are separated by spaces.)
    let url = format!("{url}%20-clock_timeout%3D500");
    let start = |worker: &str| {
        let mut env = resources.env();
        env.extend_from_slice(&[
            ("WAREHOUSE_URL", url.as_str()),
            ("CRON_ANALYZE", "* * * * * *"),
            ("CRON_VACUUM", "off"),
            ("CRON_PRUNE_LOADED_FILES", "off"),
            ("LEASE_FAILOVER_SECS", "3"),
            ("WORKER_ID", worker),
        ]);
        ServiceProcess::start(BIN, &env)
    };
    let mut a = start("a");
    let mut b = start("b");
    let some_ran = wait_until(
        || count(&mut a, "job finished") + count(&mut b, "job finished") >= 3,
        Duration::from_secs(30),
    )
    .await;
    assert!(some_ran, "the analyze job runs every second");
    let (ran_a, ran_b) = (count(&mut a, "job finished"), count(&mut b, "job finished"));
    assert!(
        ran_a == 0 || ran_b == 0,
        "both instances ran jobs: a {ran_a}, b {ran_b}"
    );
    let (mut holder, mut other) = if ran_a > 0 { (a, b) } else { (b, a) };

    // Someone holds the table: the job fails, is reported, and runs again a second later.
    sql.batch_execute(&format!("BEGIN; LOCK TABLE {schema}.events IN ACCESS EXCLUSIVE MODE"))
        .await
        .expect("lock");
    let failed_twice = wait_until(|| count(&mut holder, "job failed") >= 2, Duration::from_secs(20)).await;
    assert!(failed_twice, "a failing job is reported and retried at its next time");
    let failure = holder
        .json_lines()
        .into_iter()
        .find(|l| l["message"].as_str().is_some_and(|m| m.starts_with("job failed")))
        .unwrap_or_default();
    assert_eq!(failure["kind"], "transient", "{failure}");
    assert!(
        failure["error"].as_str().is_some_and(|e| e.contains("55P03")),
        "{failure}"
    );
    sql.batch_execute("COMMIT").await.expect("unlock");
    let before = count(&mut holder, "job finished");
    assert!(
        wait_until(|| count(&mut holder, "job finished") > before, Duration::from_secs(20)).await,
        "the job succeeds again once it can"
    );
    assert!(
        holder.exit_status().is_none(),
        "a passing failure does not stop the service"
    );

    // A graceful stop releases the lease: the other instance takes over.
    holder.terminate();
    assert!(holder.wait_exit(Duration::from_secs(20)).is_some_and(|s| s.success()));
    assert!(
        wait_until(|| count(&mut other, "job finished") > 0, Duration::from_secs(20)).await,
        "the other instance runs the jobs after the handover"
    );

    // The table disappears: no later run can succeed, so the service stops and says why.
    sql.batch_execute(&format!("DROP TABLE {schema}.events"))
        .await
        .expect("drop");
    let exit = other.wait_exit(Duration::from_secs(20));
    assert!(
        exit.is_some_and(|s| !s.success()),
        "a fatal job failure stops the service: {exit:?}"
    );
    let reason = other
        .json_lines()
        .iter()
        .find(|l| l["message"] == "service failed")
        .and_then(|l| l["error"].as_str().map(str::to_string))
        .unwrap_or_default();
    assert!(
        reason.starts_with("maintenance job analyze cannot run") && reason.contains("42P01"),
        "{reason}"
    );
    resources.delete(&aws).await;
}

/// The values of the `metric` of every EMF line the service printed, in order.
fn metric_values(service: &mut ServiceProcess, metric: &str) -> Vec<f64> {
    service
        .json_lines()
        .iter()
        .filter(|l| l["_aws"]["CloudWatchMetrics"].is_array())
        .filter_map(|l| l[metric].as_f64())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_level_drift_job_publishes_the_players_miscounted_and_zero_once_it_is_gone() {
    use aws_sdk_dynamodb::types::AttributeValue;
    use live_state::{level_state, player_state};

    let aws = stack::aws().await;
    let resources = Resources::unique();
    resources.create(&aws).await;
    let warehouse = stack::warehouse_schema("crondrift").await;
    let (players, levels) = (
        resources.name("PLAYER_STATE_TABLE"),
        resources.name("LEVEL_STATE_TABLE"),
    );
    let put = |table: &str, item: Vec<(&str, AttributeValue)>| {
        aws.dynamodb()
            .put_item()
            .table_name(table)
            .set_item(Some(item.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
            .send()
    };
    for (player, level) in [("p1", "level-a"), ("p2", "level-a")] {
        put(
            players,
            vec![
                (player_state::PLAYER_ID, AttributeValue::S(player.into())),
                (player_state::LEVEL_ID, AttributeValue::S(level.into())),
                (player_state::LAST_UPDATED, AttributeValue::N("1".into())),
            ],
        )
        .await
        .expect("a player");
    }
    let count = |n: i64| {
        vec![
            (level_state::LEVEL_ID, AttributeValue::S("level-a".into())),
            (level_state::PLAYER_COUNT, AttributeValue::N(n.to_string())),
        ]
    };
    // Three players too many on level-a.
    put(levels, count(5)).await.expect("a skewed count");
    let mut env = resources.env();
    env.extend_from_slice(&[
        ("WAREHOUSE_URL", warehouse.users.maintenance.as_str()),
        ("CRON_LEVEL_DRIFT", "* * * * * *"),
        ("CRON_ANALYZE", "off"),
        ("CRON_VACUUM", "off"),
        ("CRON_PRUNE_LOADED_FILES", "off"),
        ("RECONCILE_READS", "1"),
        ("METRICS_FLUSH_INTERVAL_SECS", "1"),
        ("LEASE_FAILOVER_SECS", "3"),
    ]);
    let mut cron = ServiceProcess::start(BIN, &env);
    assert!(
        wait_until(
            || metric_values(&mut cron, "LevelDriftPlayers").contains(&3.0),
            Duration::from_secs(30)
        )
        .await,
        "the drift is published: {:?}",
        metric_values(&mut cron, "LevelDriftPlayers")
    );
    assert!(metric_values(&mut cron, "LevelDriftLevels").contains(&1.0));
    put(levels, count(2)).await.expect("the count corrected");
    assert!(
        wait_until(
            || metric_values(&mut cron, "LevelDriftPlayers").last() == Some(&0.0),
            Duration::from_secs(30)
        )
        .await,
        "no drift is published as 0: {:?}",
        metric_values(&mut cron, "LevelDriftPlayers")
    );
    cron.terminate();
    assert!(cron.wait_exit(Duration::from_secs(20)).is_some_and(|s| s.success()));
    resources.delete(&aws).await;
    warehouse.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_level_drift_check_that_cannot_run_is_a_failed_run_and_the_warehouse_jobs_go_on() {
    let aws = stack::aws().await;
    let resources = Resources::unique();
    resources.create(&aws).await;
    let warehouse = stack::warehouse_schema("crondriftfail").await;
    let missing = format!("{}-missing", resources.name("PLAYER_STATE_TABLE"));
    let mut env = resources.env();
    env.retain(|(k, _)| *k != "PLAYER_STATE_TABLE");
    env.extend_from_slice(&[
        ("PLAYER_STATE_TABLE", missing.as_str()),
        ("WAREHOUSE_URL", warehouse.users.maintenance.as_str()),
        ("CRON_LEVEL_DRIFT", "* * * * * *"),
        ("CRON_ANALYZE", "* * * * * *"),
        ("CRON_VACUUM", "off"),
        ("CRON_PRUNE_LOADED_FILES", "off"),
        ("RECONCILE_READS", "1"),
        ("METRICS_FLUSH_INTERVAL_SECS", "1"),
        ("LEASE_FAILOVER_SECS", "3"),
    ]);
    let mut cron = ServiceProcess::start(BIN, &env);
    let drift_failures = |cron: &mut ServiceProcess| {
        cron.json_lines()
            .into_iter()
            .filter(|l| l["message"].as_str().is_some_and(|m| m.starts_with("job failed")) && l["job"] == "level_drift")
            .collect::<Vec<_>>()
    };
    assert!(
        wait_until(|| drift_failures(&mut cron).len() >= 2, Duration::from_secs(30)).await,
        "the level-drift check fails at each of its times, and the service goes on"
    );
    let failure = drift_failures(&mut cron).remove(0);
    assert_eq!(failure["kind"], "fatal", "{failure}");
    assert!(
        failure["error"].as_str().is_some_and(|e| e.contains("dynamodb:Scan")),
        "the log names the cause: {failure}"
    );
    let analyzed = count(&mut cron, "job finished");
    assert!(
        wait_until(
            || count(&mut cron, "job finished") > analyzed + 1,
            Duration::from_secs(20)
        )
        .await,
        "the warehouse jobs keep running"
    );
    assert!(
        wait_until(
            || metric_values(&mut cron, "JobFailures").iter().sum::<f64>() >= 2.0,
            Duration::from_secs(20)
        )
        .await,
        "each failed run is counted: {:?}",
        metric_values(&mut cron, "JobFailures")
    );
    assert!(cron.exit_status().is_none(), "the service still runs");
    cron.terminate();
    assert!(cron.wait_exit(Duration::from_secs(20)).is_some_and(|s| s.success()));
    resources.delete(&aws).await;
    warehouse.drop_all().await;
}
