//! The four services on exactly their task roles' policies from `infra/roles.json`, on a
//! moto that enforces IAM: each service signs as an IAM user holding its role's policy
//! (rendered for this run's names; `iam_moto::for_moto` says where moto needs it
//! widened), plays a game, and the warehouse and live state come out exact.
//!
//! Not checked here: Kinesis (kinesalite checks nothing), which tables and streams a
//! DynamoDB statement names (moto authorizes DynamoDB against `*`; the actions are
//! checked), KMS (nothing is encrypted locally) and the Data API statements (the
//! warehouse is the local PostgreSQL, each service as its own user:
//! `tests/tests/warehouse_privileges.rs`). `tests/tests/iam.rs` checks every role's
//! actions against the code's calls.

use std::time::{Duration, Instant};

use pipeline_tests::chaos::generate_args;
use pipeline_tests::chaos::observer::Observations;
use pipeline_tests::chaos::verdict::{Checked, Checker, Readers};
use pipeline_tests::iam_moto::{AccessKey, IamMoto, TemplateNames, for_moto};
use pipeline_tests::process::{ServiceProcess, workspace_binary};
use pipeline_tests::resources::Resources;
use pipeline_tests::stack::{self, WarehouseSchema};
use pipelinectl::generate;
use serde_json::Value;

/// Each service and its task role in `infra/roles.json`.
const SERVICES: [(&str, &str); 4] = [
    ("s3-connector", "S3ConnectorTaskRole"),
    ("redshift-connector", "RedshiftConnectorTaskRole"),
    ("cron-connector", "CronConnectorTaskRole"),
    ("player-state-worker", "PlayerStateWorkerTaskRole"),
];

/// A moto that checks every call after the admin exists, the pipeline's resources on it
/// under the templates' names (those the roles' policies are written for), and the
/// warehouse.
struct Enforced {
    moto: IamMoto,
    admin: AccessKey,
    aws: pipeline_runtime::AwsClients,
    templates: TemplateNames,
    resources: Resources,
    name_prefix: String,
    warehouse: WarehouseSchema,
}

impl Enforced {
    async fn start() -> Self {
        let moto = IamMoto::start(3);
        let admin = moto.admin().await;
        let aws = moto.clients(&admin).await;
        let name_prefix = format!("iam{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let templates = TemplateNames::render(&name_prefix);
        let resources = templates.resources();
        resources.create(&aws).await;
        Self {
            templates,
            warehouse: stack::warehouse_schema("iam").await,
            moto,
            admin,
            aws,
            resources,
            name_prefix,
        }
    }

    /// `service`'s role policy as moto needs it, without `drop` (an action).
    fn policy(&self, role: &str, drop: Option<&str>) -> Value {
        let mut policy = for_moto(&self.templates.role_policy(role));
        if let Some(drop) = drop
            && let Some(statements) = policy["Statement"].as_array_mut()
        {
            for statement in statements.iter_mut() {
                if let Some(actions) = statement["Action"].as_array_mut() {
                    actions.retain(|a| a != drop);
                }
            }
            statements.retain(|s| s["Action"].as_array().is_none_or(|a| !a.is_empty()));
        }
        policy
    }

    /// Starts `service` signed as a principal holding `policy`.
    async fn start_service(&self, service: &str, policy: &Value) -> ServiceProcess {
        let key = self.moto.principal(Some(&self.admin), service, policy).await;
        let warehouse_url = self.warehouse.users.url_for(service);
        let mut env = self.resources.env();
        env.extend_from_slice(&[
            ("AWS_ENDPOINT_URL", self.moto.endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", key.id.as_str()),
            ("AWS_SECRET_ACCESS_KEY", key.secret.as_str()),
            ("WAREHOUSE_URL", warehouse_url),
            // As deployed: the tables exist, and no role may create one.
            ("CREATE_LEASE_TABLES", "false"),
            ("BATCH_MAX_AGE_SECS", "1"),
            ("BATCH_MAX_RECORDS", "200"),
            ("LOAD_MAX_AGE_SECS", "1"),
            ("LOAD_MAX_FILES", "5"),
            ("IDLE_BETWEEN_READS_MS", "200"),
            ("LEASE_FAILOVER_SECS", "3"),
            ("METRICS_FLUSH_INTERVAL_SECS", "1"),
            ("PRUNE_INTERVAL_SECS", "2"),
            ("CRON_ANALYZE", "*/5 * * * * *"),
            ("CRON_VACUUM", "*/7 * * * * *"),
            // The level-drift check scans PlayerState and LevelState under the role too.
            ("CRON_LEVEL_DRIFT", "*/3 * * * * *"),
            ("RECONCILE_READS", "1"),
        ]);
        let log = self.logs().join(format!("{service}.log"));
        ServiceProcess::start_logged(&workspace_binary(service), &env, Some(&log))
    }

    /// Where the services' logs go.
    fn logs(&self) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("iam-enforced-{}", self.name_prefix));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        dir
    }

    /// Plays a short game into the telemetry stream.
    async fn play(&self, seconds: u64) -> generate::Summary {
        let argv = [
            "generate".to_string(),
            format!("--telemetry-stream={}", self.resources.name("TELEMETRY_STREAM")),
            "--count=0".into(),
            format!("--duration-secs={seconds}"),
            "--rate=50".into(),
            "--players=40".into(),
            "--levels=3".into(),
            "--duplicates=0.05".into(),
            "--malformed=0.02".into(),
        ];
        generate::run(Some(self.aws.kinesis()), &generate_args(&argv))
            .await
            .expect("the game is sent")
    }

    async fn checker(&self) -> Checker {
        let name = |var: &str| self.resources.name(var).to_string();
        Checker::new(
            self.aws.clone(),
            stack::connect_warehouse(&self.warehouse.url).await,
            Checked {
                bucket: name("BUCKET"),
                level_state: name("LEVEL_STATE_TABLE"),
                player_state: name("PLAYER_STATE_TABLE"),
                readers: vec![
                    Readers {
                        stream: name("TELEMETRY_STREAM"),
                        lease_tables: vec![name("S3_CONNECTOR_LEASE_TABLE"), name("PLAYER_STATE_LEASE_TABLE")],
                    },
                    Readers {
                        stream: name("FILES_STREAM"),
                        lease_tables: vec![name("REDSHIFT_CONNECTOR_LEASE_TABLE")],
                    },
                ],
            },
        )
    }

    async fn delete(self) {
        stack::delete_stream(&self.aws, self.resources.name("TELEMETRY_STREAM")).await;
        stack::delete_stream(&self.aws, self.resources.name("FILES_STREAM")).await;
        self.warehouse.drop_all().await;
    }
}

/// Log lines of `service` that say a call was denied.
fn denials(service: &mut ServiceProcess) -> Vec<String> {
    service
        .messages()
        .into_iter()
        .filter(|l| l.contains("AccessDenied") || l.contains("denied") || l.contains("not authorized"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iam_enforced_services_run_a_game_on_exactly_their_roles_policies() {
    let enforced = Enforced::start().await;
    let mut services = Vec::new();
    for (service, role) in SERVICES {
        let policy = enforced.policy(role, None);
        services.push((service, enforced.start_service(service, &policy).await));
    }
    for (service, process) in &mut services {
        let addr = process.health_addr(Duration::from_secs(30));
        assert!(
            process.wait_for_status(addr, "/readyz", 200, Duration::from_secs(60)),
            "{service} becomes ready on its role's policy: {:?}",
            denials(process)
        );
    }
    let sent = enforced.play(10).await;
    let mut checker = enforced.checker().await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let verdict = loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let verdict = checker.measure(&Observations::default()).await.expect("measure");
        if verdict.holds(&sent) || Instant::now() >= deadline {
            break verdict;
        }
    };
    let denied: Vec<String> = services
        .iter_mut()
        .flat_map(|(service, process)| denials(process).into_iter().map(move |l| format!("{service}: {l}")))
        .collect();
    assert!(
        verdict.holds(&sent),
        "on their roles' policies: {:?}\ndenied calls: {denied:#?}\nlogs in {}",
        verdict.problems(&sent),
        enforced.logs().display()
    );
    assert!(denied.is_empty(), "no call of any service is denied: {denied:#?}");
    for (service, process) in &mut services {
        process.terminate();
        let status = process.wait_exit(Duration::from_secs(30));
        assert!(
            status.is_some_and(|s| s.success()),
            "{service} stops cleanly (its leases released on its policy): {:?}",
            denials(process)
        );
    }
    enforced.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iam_enforced_a_role_without_an_action_it_needs_fails_naming_it() {
    let enforced = Enforced::start().await;
    let policy = enforced.policy("S3ConnectorTaskRole", Some("s3:PutObject"));
    let mut connector = enforced.start_service("s3-connector", &policy).await;
    enforced.play(3).await;
    let (failed, log) = connector.failed_within(Duration::from_secs(60));
    assert!(failed, "the connector stops on the denied write:\n{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("s3:PutObject") && (l.contains("denied") || l.contains("AccessDenied"))),
        "the failure names the action and says it was denied:\n{log}"
    );
    enforced.delete().await;
}
