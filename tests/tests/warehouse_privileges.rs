//! The warehouse as Redshift has it: each service a user of its own with only its
//! grants, the schema the owner's (`pipelinectl setup`). The local stack's users come
//! from `deploy/local/up`; a grant missing from `warehouse::privileges` fails here.

use std::time::Duration;

use pipeline_runtime::error::{Classified, ErrorKind};
use pipeline_tests::process::{ServiceProcess, workspace_binary};
use pipeline_tests::resources::Resources;
use pipeline_tests::stack;
use warehouse::postgres::{PostgresWarehouse, Tls};
use warehouse::{Warehouse, WarehouseError};

async fn open(url: &str) -> Warehouse {
    Warehouse::Postgres(PostgresWarehouse::new(url, Tls::Disable, stack::aws().await.s3()))
}

/// The SQLSTATE of a statement's failure.
fn sqlstate(error: &WarehouseError) -> Option<&str> {
    match error {
        WarehouseError::Statement { sqlstate, .. } => sqlstate.as_deref(),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warehouse_privileges_are_each_users_own_and_no_more() {
    let schema = stack::warehouse_schema("privileges").await;
    let loader = open(&schema.users.loader).await;
    let reader = open(&schema.users.reader).await;
    let maintenance = open(&schema.users.maintenance).await;

    assert_eq!(
        loader.check_schema().await.expect("the loader reads the version"),
        loader.schema_needed()
    );
    let denied = loader
        .migrate()
        .await
        .expect_err("the loader may not change the schema");
    assert_eq!(sqlstate(&denied), Some("42501"), "{denied}");
    assert_eq!(denied.kind(), ErrorKind::Fatal);
    for statement in [
        "DELETE FROM events",
        "DELETE FROM loaded_files",
        "DROP TABLE events",
        "DELETE FROM forgotten_clients",
    ] {
        let denied = loader.execute(statement).await.expect_err(statement);
        assert_eq!(sqlstate(&denied), Some("42501"), "{statement}: {denied}");
    }
    assert!(
        matches!(loader.check_can_maintain().await, Err(WarehouseError::CannotMaintain)),
        "a loader's VACUUM would do nothing, and the check says so"
    );

    reader
        .execute("SELECT COUNT(*) FROM events")
        .await
        .expect("the reader reads");
    let denied = reader
        .execute("INSERT INTO loaded_files (file_key, row_count, loaded_at) VALUES ('k', 1, now())")
        .await
        .expect_err("the reader may not write");
    assert_eq!(sqlstate(&denied), Some("42501"), "{denied}");

    maintenance.check_can_maintain().await.expect("maintenance may VACUUM");
    for work in [
        warehouse::Maintenance::Vacuum,
        warehouse::Maintenance::Retention { days: 30 },
    ] {
        for statement in work.statements(warehouse::Dialect::Postgres) {
            maintenance.execute(&statement).await.expect(&statement);
        }
    }
    let vacuums: i64 = schema
        .sql
        .query_one(
            "SELECT vacuum_count FROM pg_stat_user_tables WHERE schemaname = current_schema() AND relname = 'events'",
            &[],
        )
        .await
        .expect("vacuum count")
        .get(0);
    assert!(vacuums >= 1, "the VACUUM did its work, not a silent skip");
    schema.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warehouse_privileges_services_never_migrate_and_maintenance_must_be_able_to_vacuum() {
    let aws = stack::aws().await;
    let resources = Resources::unique();
    resources.create(&aws).await;
    let schema = stack::warehouse_schema("privileged_start").await;
    // A schema nobody set up: the loader stops at once and says what to run.
    let empty = format!("empty_{}", uuid::Uuid::new_v4().simple());
    schema
        .sql
        .batch_execute(&format!(
            "CREATE SCHEMA {empty}; GRANT USAGE ON SCHEMA {empty} TO PUBLIC"
        ))
        .await
        .expect("empty schema");
    let empty_url = schema.users.loader.replace(&schema.name, &empty);
    let mut env = resources.env();
    env.push(("WAREHOUSE_URL", &empty_url));
    let mut loader = ServiceProcess::start(&workspace_binary("redshift-connector"), &env);
    let (failed, log) = loader.failed_within(Duration::from_secs(60));
    assert!(failed, "the loader exits non-zero:\n{log}");
    assert!(
        log.contains("schema is at version 0") && log.contains("pipelinectl setup"),
        "{log}"
    );

    // A cron-connector whose VACUUM would do nothing stops at once.
    let mut env = resources.env();
    env.push(("WAREHOUSE_URL", &schema.users.loader));
    let mut cron = ServiceProcess::start(&workspace_binary("cron-connector"), &env);
    let (failed, log) = cron.failed_within(Duration::from_secs(60));
    assert!(failed, "the cron-connector exits non-zero:\n{log}");
    assert!(log.contains("may not VACUUM"), "{log}");
    schema
        .sql
        .batch_execute(&format!("DROP SCHEMA {empty} CASCADE"))
        .await
        .expect("drop");
    resources.delete(&aws).await;
    schema.drop_all().await;
}
