//! `reconcile-levels --check` on the local stack: silent and exit 0 while LevelState is
//! the recount of PlayerState; the drifted levels, signed, and exit 1 once it is not;
//! and a run without `--check` refused, since it would have to write.

use aws_sdk_dynamodb::types::AttributeValue;
use live_state::{level_state, player_state};
use pipeline_runtime::AwsClients;
use pipeline_tests::process::run_command;
use pipeline_tests::resources::Resources;
use pipeline_tests::stack;

const BIN: &str = env!("CARGO_BIN_EXE_pipelinectl");

fn reconcile(env: &[(&str, &str)], args: &[&str]) -> (Option<i32>, String) {
    let args: Vec<&str> = ["reconcile-levels", "--reads=2", "--interval-secs=0"]
        .into_iter()
        .chain(args.iter().copied())
        .collect();
    run_command(BIN, env, &args)
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

    let (code, text) = reconcile(&env, &[]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("RECONCILE_CHECK"), "{text}");
    resources.delete(&aws).await;
}
