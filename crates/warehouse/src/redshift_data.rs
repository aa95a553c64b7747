//! The Redshift Data API back end: no driver and no network path to the cluster, IAM
//! or a Secrets Manager secret for credentials, a provisioned cluster or a serverless
//! workgroup. A load is one BatchExecuteStatement (one transaction); its status is
//! polled with backoff, and a failure names the statement and the server's message.

use std::time::Duration;

use aws_sdk_redshiftdata::types::{SqlParameter, StatusString};
use shard_consumer::backoff::Backoff;

use crate::manifest::{self, Manifest};
use crate::query::Query;
use crate::schema::{self, Dialect};
use crate::{LoadBatch, LoadReport, WarehouseError, sql};

/// Where statements run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A provisioned cluster, with a database user (IAM auth) or a secret.
    Cluster {
        cluster_id: String,
        database: String,
        db_user: Option<String>,
        secret_arn: Option<String>,
    },
    /// A Redshift Serverless workgroup (IAM auth, or a secret).
    Workgroup {
        workgroup: String,
        database: String,
        secret_arn: Option<String>,
    },
}

/// Points a Data API request at the target. (A macro: the request builders of
/// BatchExecuteStatement and ExecuteStatement share these setters but no trait.)
macro_rules! on_target {
    ($request:expr, $target:expr) => {
        match $target {
            Target::Cluster {
                cluster_id,
                database,
                db_user,
                secret_arn,
            } => $request
                .cluster_identifier(cluster_id)
                .database(database)
                .set_db_user(db_user.clone())
                .set_secret_arn(secret_arn.clone()),
            Target::Workgroup {
                workgroup,
                database,
                secret_arn,
            } => $request
                .workgroup_name(workgroup)
                .database(database)
                .set_secret_arn(secret_arn.clone()),
        }
    };
}

pub struct RedshiftDataWarehouse {
    client: aws_sdk_redshiftdata::Client,
    target: Target,
    s3: aws_sdk_s3::Client,
    /// The IAM role Redshift assumes to read the batch files.
    copy_role_arn: String,
    /// How long one statement may run before it is reported as failed.
    timeout: Duration,
}

/// The statements of one load, in transaction order, and the index of each one whose
/// result the report needs.
pub struct LoadStatements {
    pub sqls: Vec<String>,
    pub copy: usize,
    pub counts: usize,
    pub insert: usize,
}

/// The load transaction for files listed in `manifest_url`.
pub fn load_statements(
    manifest_url: &str,
    jsonpaths_url: &str,
    copy_role_arn: &str,
    files: &[(String, u64)],
) -> LoadStatements {
    let sqls = vec![
        sql::lock_loaded_files(Dialect::Redshift).to_string(),
        sql::create_staging(Dialect::Redshift).to_string(),
        sql::copy_from_manifest(manifest_url, jsonpaths_url, copy_role_arn),
        sql::STAGED_COUNTS.to_string(),
        sql::insert_deduplicated(),
        sql::record_files(Dialect::Redshift, files),
        sql::DROP_STAGING.to_string(),
    ];
    LoadStatements {
        sqls,
        copy: 2,
        counts: 3,
        insert: 4,
    }
}

impl RedshiftDataWarehouse {
    pub fn new(
        client: aws_sdk_redshiftdata::Client,
        target: Target,
        s3: aws_sdk_s3::Client,
        copy_role_arn: &str,
    ) -> Self {
        Self {
            client,
            target,
            s3,
            copy_role_arn: copy_role_arn.to_string(),
            timeout: Duration::from_secs(900),
        }
    }

    /// The BatchExecuteStatement request for `sqls` against the target.
    pub fn batch_request(
        &self,
        sqls: Vec<String>,
    ) -> aws_sdk_redshiftdata::operation::batch_execute_statement::builders::BatchExecuteStatementFluentBuilder {
        let request = self
            .client
            .batch_execute_statement()
            .set_sqls(Some(sqls))
            .with_event(false);
        on_target!(request, &self.target)
    }

    /// The ExecuteStatement request for one query with bound parameters.
    pub fn query_request(
        &self,
        query: &Query,
    ) -> aws_sdk_redshiftdata::operation::execute_statement::builders::ExecuteStatementFluentBuilder {
        let parameters: Vec<SqlParameter> = query
            .parameters
            .iter()
            .filter_map(|(name, value)| SqlParameter::builder().name(*name).value(value.as_text()).build().ok())
            .collect();
        let request = self
            .client
            .execute_statement()
            .sql(&query.sql)
            .set_parameters((!parameters.is_empty()).then_some(parameters))
            .with_event(false);
        on_target!(request, &self.target)
    }

    /// Runs a read-only query; every column is a BIGINT.
    pub async fn select(&self, query: &Query) -> Result<Vec<Vec<i64>>, WarehouseError> {
        let output = self.query_request(query).send().await.map_err(|e| {
            WarehouseError::statement(&query.sql, aws_smithy_types::error::display::DisplayErrorContext(&e))
        })?;
        let id = output.id().unwrap_or_default().to_string();
        self.wait(&id).await?;
        let mut rows = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .client
                .get_statement_result()
                .id(&id)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| {
                    WarehouseError::Api(aws_smithy_types::error::display::DisplayErrorContext(&e).to_string())
                })?;
            rows.extend(
                page.records()
                    .iter()
                    .map(|row| row.iter().map(|f| f.as_long_value().copied().unwrap_or(0)).collect()),
            );
            token = page.next_token().map(str::to_string);
            if token.is_none() {
                return Ok(rows);
            }
        }
    }

    /// Runs statements as one transaction and waits for the end; returns the statement id.
    async fn run(&self, sqls: Vec<String>) -> Result<String, WarehouseError> {
        let first = sqls.first().cloned().unwrap_or_default();
        let output = self.batch_request(sqls).send().await.map_err(|e| {
            WarehouseError::statement(&first, aws_smithy_types::error::display::DisplayErrorContext(&e))
        })?;
        let id = output.id().unwrap_or_default().to_string();
        self.wait(&id).await?;
        Ok(id)
    }

    async fn wait(&self, id: &str) -> Result<(), WarehouseError> {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let status = self.client.describe_statement().id(id).send().await.map_err(|e| {
                WarehouseError::Api(aws_smithy_types::error::display::DisplayErrorContext(&e).to_string())
            })?;
            match status.status() {
                Some(StatusString::Finished) => return Ok(()),
                Some(StatusString::Failed | StatusString::Aborted) => {
                    // The failing sub-statement names itself; otherwise the batch does.
                    let failed = status.sub_statements().iter().find(|s| s.error().is_some()).map(|s| {
                        (
                            s.query_string().unwrap_or_default().to_string(),
                            s.error().unwrap_or_default().to_string(),
                        )
                    });
                    let (statement, message) = failed.unwrap_or_else(|| {
                        (
                            status.query_string().unwrap_or_default().to_string(),
                            status.error().unwrap_or("aborted").to_string(),
                        )
                    });
                    return Err(WarehouseError::statement(&statement, message));
                }
                _ if tokio::time::Instant::now() > deadline => {
                    let _ = self.client.cancel_statement().id(id).send().await;
                    return Err(WarehouseError::Api(format!(
                        "statement {id} ran past {:?}; cancelled",
                        self.timeout
                    )));
                }
                _ => tokio::time::sleep(backoff.next_delay()).await,
            }
        }
    }

    /// Rows affected by sub-statement `index` of batch `id`.
    async fn rows_of(&self, id: &str, index: usize) -> Result<i64, WarehouseError> {
        let status =
            self.client.describe_statement().id(id).send().await.map_err(|e| {
                WarehouseError::Api(aws_smithy_types::error::display::DisplayErrorContext(&e).to_string())
            })?;
        Ok(status.sub_statements().get(index).map_or(0, |s| s.result_rows()))
    }

    /// The first row of a SELECT sub-statement, as numbers.
    async fn numbers_of(&self, id: &str, index: usize) -> Result<Vec<i64>, WarehouseError> {
        let result = self
            .client
            .get_statement_result()
            .id(format!("{id}:{}", index + 1))
            .send()
            .await
            .map_err(|e| WarehouseError::Api(aws_smithy_types::error::display::DisplayErrorContext(&e).to_string()))?;
        Ok(result
            .records()
            .first()
            .map(|row| row.iter().map(|f| f.as_long_value().copied().unwrap_or(0)).collect())
            .unwrap_or_default())
    }

    async fn select_strings(&self, sql: String) -> Result<Vec<String>, WarehouseError> {
        let id = self.run(vec![sql]).await?;
        let result = self
            .client
            .get_statement_result()
            .id(format!("{id}:1"))
            .send()
            .await
            .map_err(|e| WarehouseError::Api(aws_smithy_types::error::display::DisplayErrorContext(&e).to_string()))?;
        Ok(result
            .records()
            .iter()
            .filter_map(|row| row.first().and_then(|f| f.as_string_value().ok()).cloned())
            .collect())
    }

    pub async fn migrate(&self) -> Result<u32, WarehouseError> {
        self.run(vec![schema::version_table().to_string()]).await?;
        let migrations = schema::migrations(Dialect::Redshift);
        let applied = self
            .select_strings("SELECT CAST(COALESCE(MAX(version), 0) AS VARCHAR) FROM schema_version".into())
            .await?;
        let current: usize = applied.first().and_then(|v| v.parse().ok()).unwrap_or(0);
        for (index, statements) in migrations.iter().enumerate().skip(current) {
            let mut sqls = statements.clone();
            sqls.push(format!(
                "INSERT INTO schema_version (version, applied_at) VALUES ({}, GETDATE())",
                index + 1
            ));
            self.run(sqls).await?;
        }
        Ok(u32::try_from(migrations.len()).unwrap_or(u32::MAX))
    }

    pub async fn execute(&self, statement: &str) -> Result<(), WarehouseError> {
        self.run(vec![statement.to_string()]).await.map(|_| ())
    }

    pub async fn load(&self, batch: &LoadBatch) -> Result<LoadReport, WarehouseError> {
        let keys: Vec<String> = batch.files.iter().map(|f| f.key.clone()).collect();
        // Skipping loaded files here saves work; the event-id dedupe inside the
        // transaction is what keeps a racing replay from inserting twice.
        let loaded = if keys.is_empty() {
            Vec::new()
        } else {
            self.select_strings(sql::loaded_among(&keys)).await?
        };
        let todo: Vec<_> = batch
            .files
            .iter()
            .filter(|f| !loaded.contains(&f.key))
            .cloned()
            .collect();
        let mut report = LoadReport {
            files_skipped: (batch.files.len() - todo.len()) as u64,
            ..LoadReport::default()
        };
        if todo.is_empty() {
            return Ok(report);
        }
        manifest::write(
            &self.s3,
            &batch.bucket,
            &batch.manifest_key,
            &Manifest::for_files(&todo),
        )
        .await?;
        manifest::write_jsonpaths(&self.s3, &batch.bucket).await?;
        let files: Vec<(String, u64)> = todo.iter().map(|f| (f.key.clone(), f.records)).collect();
        let statements = load_statements(
            &format!("s3://{}/{}", batch.bucket, batch.manifest_key),
            &format!("s3://{}/{}", batch.bucket, manifest::JSONPATHS_KEY),
            &self.copy_role_arn,
            &files,
        );
        let id = self.run(statements.sqls).await?;
        let staged = self.rows_of(&id, statements.copy).await?;
        let counts = self.numbers_of(&id, statements.counts).await?;
        let distinct = counts.get(1).copied().unwrap_or(staged);
        let inserted = self.rows_of(&id, statements.insert).await?;
        report.files_loaded = todo.len() as u64;
        report.rows_staged = u64::try_from(staged).unwrap_or(0);
        report.duplicates_in_batch = u64::try_from(staged - distinct).unwrap_or(0);
        report.rows_inserted = u64::try_from(inserted).unwrap_or(0);
        report.duplicates_in_table = u64::try_from(distinct - inserted).unwrap_or(0);
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn warehouse(target: Target) -> RedshiftDataWarehouse {
        let config = aws_sdk_redshiftdata::Config::builder()
            .behavior_version(aws_sdk_redshiftdata::config::BehaviorVersion::latest())
            .region(aws_sdk_redshiftdata::config::Region::new("eu-west-1"))
            .build();
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::Config::builder()
                .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
                .region(aws_sdk_s3::config::Region::new("eu-west-1"))
                .build(),
        );
        RedshiftDataWarehouse::new(
            aws_sdk_redshiftdata::Client::from_conf(config),
            target,
            s3,
            "arn:aws:iam::1:role/copy",
        )
    }

    #[test]
    fn a_load_is_one_batch_in_transaction_order() {
        let statements = load_statements("s3://b/m", "s3://b/j", "arn:role", &[("events/k.gzip".into(), 7)]);
        assert_eq!(statements.sqls[0], "LOCK loaded_files");
        assert_eq!(statements.sqls[1], "CREATE TEMP TABLE staging (LIKE events)");
        assert!(statements.sqls[statements.copy].starts_with("COPY staging ("));
        assert!(statements.sqls[statements.copy].contains("MANIFEST GZIP JSON 's3://b/j' TIMEFORMAT 'epochmillisecs'"));
        assert_eq!(statements.sqls[statements.counts], sql::STAGED_COUNTS);
        assert!(statements.sqls[statements.insert].starts_with("INSERT INTO events"));
        assert_eq!(
            statements.sqls[5],
            "INSERT INTO loaded_files (file_key, row_count, loaded_at) VALUES ('events/k.gzip', 7, GETDATE())"
        );
        assert_eq!(statements.sqls.last().map(String::as_str), Some("DROP TABLE staging"));
    }

    #[test]
    fn a_query_sends_its_values_as_named_parameters() {
        let serverless = warehouse(Target::Workgroup {
            workgroup: "wg".into(),
            database: "games".into(),
            secret_arn: None,
        });
        let query = crate::query::HeatmapQuery {
            level_id: "it's".into(),
            event_type: "player_death".into(),
            since_ms: 5,
            until_ms: 6,
            columns: 10,
            rows: 7,
            width: 1000.0,
            height: 700.5,
        }
        .query();
        let request = serverless.query_request(&query);
        let input = request.as_input();
        assert_eq!(input.get_sql().as_deref(), Some(query.sql.as_str()));
        assert_eq!(input.get_workgroup_name().as_deref(), Some("wg"));
        let sent: Vec<(&str, &str)> = input
            .get_parameters()
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|p| (p.name(), p.value()))
            .collect();
        assert!(sent.contains(&("level_id", "it's")));
        assert!(sent.contains(&("height", "700.5")));
        assert!(sent.contains(&("since", "1970-01-01 00:00:00.005")));
        assert_eq!(sent.len(), query.parameters.len());
    }

    #[test]
    fn requests_name_the_cluster_or_the_workgroup() {
        let cluster = warehouse(Target::Cluster {
            cluster_id: "analytics".into(),
            database: "games".into(),
            db_user: Some("loader".into()),
            secret_arn: None,
        });
        let request = cluster.batch_request(vec!["SELECT 1".into()]);
        let input = request.as_input();
        assert_eq!(input.get_cluster_identifier().as_deref(), Some("analytics"));
        assert_eq!(input.get_database().as_deref(), Some("games"));
        assert_eq!(input.get_db_user().as_deref(), Some("loader"));
        assert_eq!(input.get_workgroup_name(), &None);
        assert_eq!(input.get_sqls().as_deref(), Some(&["SELECT 1".to_string()][..]));

        let serverless = warehouse(Target::Workgroup {
            workgroup: "wg".into(),
            database: "games".into(),
            secret_arn: Some("arn:aws:secretsmanager:eu-west-1:1:secret:x".into()),
        });
        let request = serverless.batch_request(vec!["SELECT 1".into()]);
        let input = request.as_input();
        assert_eq!(input.get_workgroup_name().as_deref(), Some("wg"));
        assert_eq!(input.get_cluster_identifier(), &None);
        assert!(
            input
                .get_secret_arn()
                .as_deref()
                .is_some_and(|a| a.contains("secretsmanager"))
        );
    }
}
