//! Lease takeover when a worker goes: killed without a word (what SIGKILL leaves: no
//! release, no more heartbeats), or stopped gracefully (SIGTERM: flush, checkpoint,
//! release, leave the worker table). The time from the kill or the stop until the
//! survivor holds every lease, and until every record put after it has been
//! delivered, the gone worker's shards included. Needs the local stack
//! (`deploy/local/up`, then `eval "$(deploy/local/env)"`):
//!
//!   cargo bench -p shard-consumer --bench takeover

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{Log, owners, put, start_kinesis, wait_until_delivered};
use pipeline_tests::stack;
use shard_consumer::LeaseTable;

const RUNS: usize = 5;
const SHARDS: i32 = 4;

/// Polls the lease table until `done` holds for the owners, or `timeout`.
async fn wait_owners(
    table: &LeaseTable,
    timeout: Duration,
    done: impl Fn(&std::collections::HashMap<String, Option<String>>) -> bool,
) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let owners = owners(table).await;
        if owners.len() == SHARDS as usize && done(&owners) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    Killed,
    Stopped,
}

/// One exit: seconds to every lease held by the survivor, and to every new record delivered.
async fn one_run(aws: &pipeline_runtime::AwsClients, failover: Duration, exit: Exit) -> (f64, f64) {
    let stream = stack::unique_name("bench-takeover");
    let table_name = stack::unique_name("bench-takeover-leases");
    stack::create_stream(aws, &stream, SHARDS).await;
    let table = LeaseTable::new(aws.dynamodb(), &table_name);
    let log = Log::default();
    let victim = start_kinesis(aws, &stream, &table_name, "victim", failover, &log);
    let held = |who: &'static str| {
        move |o: &std::collections::HashMap<String, Option<String>>| o.values().any(|w| w.as_deref() == Some(who))
    };
    assert!(
        wait_owners(&table, failover * 4, held("victim")).await,
        "the victim takes leases"
    );
    let survivor = start_kinesis(aws, &stream, &table_name, "survivor", failover, &log);
    assert!(
        wait_owners(&table, failover * 6, |o| held("victim")(o) && held("survivor")(o)).await,
        "the two workers share the shards"
    );
    // At a random point of the heartbeat and taker cycles, not right after a take.
    tokio::time::sleep(failover.mul_f64(fastrand::f64())).await;
    let stopper = match exit {
        Exit::Killed => {
            victim.task.abort();
            None
        }
        Exit::Stopped => Some(tokio::spawn(victim.stop())),
    };
    let killed = Instant::now();
    put(aws, &stream, 0..40, 40).await;
    assert!(
        wait_owners(&table, failover * 4, |o| o
            .values()
            .all(|w| w.as_deref() == Some("survivor")))
        .await,
        "the survivor takes every lease"
    );
    let taken = killed.elapsed().as_secs_f64();
    assert_eq!(
        wait_until_delivered(&log, 40, failover * 4).await.len(),
        40,
        "every new record is delivered"
    );
    let delivered = killed.elapsed().as_secs_f64();
    if let Some(stopper) = stopper {
        stopper.await.expect("the victim stops");
    }
    survivor.stop().await;
    stack::delete_stream(aws, &stream).await;
    stack::delete_table(aws, &table_name).await;
    (taken, delivered)
}

fn summary(mut values: Vec<f64>) -> String {
    values.sort_by(f64::total_cmp);
    format!(
        "median {:.2} s (min {:.2}, max {:.2})",
        values[values.len() / 2],
        values[0],
        values[values.len() - 1]
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes `--bench`; a plain `cargo test --benches` run passes nothing and skips.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let aws = stack::aws().await;
    for (exit, failover_secs) in [(Exit::Killed, 10), (Exit::Killed, 3), (Exit::Stopped, 10)] {
        let failover = Duration::from_secs(failover_secs);
        let mut taken = Vec::new();
        let mut delivered = Vec::new();
        for _ in 0..RUNS {
            let (t, d) = one_run(&aws, failover, exit).await;
            taken.push(t);
            delivered.push(d);
        }
        let what = match exit {
            Exit::Killed => "takeover",
            Exit::Stopped => "graceful hand-off",
        };
        let after = match exit {
            Exit::Killed => "the kill",
            Exit::Stopped => "the stop",
        };
        println!(
            "{what} with LEASE_FAILOVER_SECS={failover_secs}: every lease held by the survivor after {}; every record put after {after} delivered after {} ({RUNS} runs, {SHARDS} shards)",
            summary(taken),
            summary(delivered)
        );
    }
}
