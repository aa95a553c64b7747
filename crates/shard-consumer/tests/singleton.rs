//! Two instances of a "one at a time" job: exactly one holds the lease; a graceful
//! release hands it over within one pass, a dead holder's lease after the failover time.

use std::time::Duration;

use pipeline_tests::stack;
use shard_consumer::LeaseTable;
use shard_consumer::singleton::{SingletonGuard, SingletonLease};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const FAILOVER: Duration = Duration::from_secs(3);

fn acquire_in_background(lease: SingletonLease) -> tokio::task::JoinHandle<SingletonGuard> {
    tokio::spawn(async move {
        lease
            .acquire(&CancellationToken::new())
            .await
            .expect("lease table")
            .expect("not shut down")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_holder_at_a_time_handed_over_on_release_and_after_death() {
    let aws = stack::aws().await;
    let table = stack::unique_name("sc-singleton");
    let lease = |worker: &str| SingletonLease::new(LeaseTable::new(aws.dynamodb(), &table), "cron", worker, FAILOVER);

    let first = lease("a").acquire(&CancellationToken::new()).await.expect("acquire");
    let first = first.expect("the free lease is taken");
    let mut second = acquire_in_background(lease("b"));

    // While "a" renews, "b" waits past the failover time: the renewals reach the table.
    // (That a renewed lease never counts as expired is `ExpiryTracker`'s, unit-tested.)
    let waited = tokio::time::timeout(FAILOVER + Duration::from_secs(1), &mut second).await;
    assert!(waited.is_err(), "two holders at once");
    assert!(!first.lost.is_cancelled());

    // A graceful release: "b" takes it at its next pass (every failover / 2).
    first.release().await;
    let released_at = Instant::now();
    let second = tokio::time::timeout(FAILOVER, second)
        .await
        .expect("taken within one pass after the release")
        .expect("task");
    assert!(released_at.elapsed() <= FAILOVER);

    // "b" dies without releasing (its guard is dropped, renewal stops): "a" gets the
    // lease once it has stood still for the failover time.
    let third = acquire_in_background(lease("a"));
    drop(second);
    let died_at = Instant::now();
    let third = tokio::time::timeout(FAILOVER * 2 + Duration::from_secs(1), third)
        .await
        .expect("taken within 2 x failover after the holder died")
        .expect("task");
    assert!(died_at.elapsed() >= FAILOVER, "taken before the lease expired");
    third.release().await;

    // Shutdown while waiting returns None instead of a lease.
    let holder = lease("c")
        .acquire(&CancellationToken::new())
        .await
        .expect("acquire")
        .expect("free");
    let shutdown = CancellationToken::new();
    shutdown.cancel();
    assert!(lease("d").acquire(&shutdown).await.expect("acquire").is_none());
    holder.release().await;
    stack::delete_table(&aws, &table).await;
}
